package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// DefaultInterval is how often Watch polls the registry file.
const DefaultInterval = 500 * time.Millisecond

// Watch calls onChange with the registry at path and again every time the
// file's content changes to another valid registry; see Watcher. It blocks
// until ctx is done and returns nil then.
func Watch(ctx context.Context, path string, onChange func(*Registry), onError func(error)) error {
	w := &Watcher{Path: path, OnChange: onChange, OnError: onError}
	return w.Run(ctx)
}

// Watcher polls a registry file. A poll stats the file and reads it only
// when its size, modification time, inode or device changed (or the
// modification time is so recent that a same-size rewrite within the
// file system's timestamp granularity could hide), then compares a hash of
// the content with the last content it handled. Rewrites in place and
// replacements by rename (editors, ConfigMap symlink swaps) are both seen.
//
// The first poll reports the file as it is (OnChange or OnError). After
// that OnChange is called only for new valid content and OnError once per
// new invalid content (or once per new read error): the caller keeps the
// last good registry while the file is invalid or missing.
type Watcher struct {
	// Path is the registry file.
	Path string
	// Interval is the polling period; DefaultInterval when zero.
	Interval time.Duration
	// OnChange receives each new valid registry. Required.
	OnChange func(*Registry)
	// OnError receives each new problem with the file; may be nil.
	OnError func(error)

	last     fileStamp
	lastSum  [sha256.Size]byte
	lastErr  string
	haveSum  bool
	recheck  bool
	reported bool
}

type fileStamp struct {
	size       int64
	mtime      time.Time
	dev, inode uint64
}

// Run polls until ctx is done and returns nil then.
func (w *Watcher) Run(ctx context.Context) error {
	iv := w.Interval
	if iv <= 0 {
		iv = DefaultInterval
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		w.Poll()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// racyWindow is how recent a modification time must be for the stat
// comparison not to be trusted (coarse timestamps on some file systems).
const racyWindow = 2 * time.Second

// Poll checks the file once and calls OnChange or OnError if needed. Run
// calls it on every tick; it is exported for callers that want to force a
// check (for example on SIGHUP). It must not be called concurrently.
func (w *Watcher) Poll() {
	st, err := os.Stat(w.Path)
	if err != nil {
		w.fail(fmt.Errorf("stat registry: %w", err))
		return
	}
	stamp := fileStamp{size: st.Size(), mtime: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		stamp.dev, stamp.inode = uint64(sys.Dev), sys.Ino
	}
	if w.reported && stamp == w.last && !w.recheck {
		return
	}
	w.recheck = time.Since(stamp.mtime) < racyWindow
	b, err := os.ReadFile(w.Path)
	if err != nil {
		w.fail(fmt.Errorf("read registry: %w", err))
		return
	}
	w.last = stamp
	sum := sha256.Sum256(b)
	if w.haveSum && bytes.Equal(sum[:], w.lastSum[:]) {
		return
	}
	w.lastSum, w.haveSum = sum, true
	r, err := Parse(b)
	if err != nil {
		w.fail(fmt.Errorf("registry %s: %w", w.Path, err))
		return
	}
	w.lastErr = ""
	w.reported = true
	w.OnChange(r)
}

func (w *Watcher) fail(err error) {
	w.reported = true
	// A read error makes the next successful read count as new content,
	// even if it is the content we had: the caller was told the file was
	// broken, so it should hear that it is good again.
	var pe *os.PathError
	if errors.As(err, &pe) {
		w.haveSum = false
		w.last = fileStamp{}
	}
	if msg := err.Error(); msg != w.lastErr {
		w.lastErr = msg
		if w.OnError != nil {
			w.OnError(err)
		}
	}
}
