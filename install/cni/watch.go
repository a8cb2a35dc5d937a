package cni

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// watchMask is every change of a directory entry that can change which
// config is primary or what it holds.
const watchMask = unix.IN_CREATE | unix.IN_CLOSE_WRITE | unix.IN_MODIFY |
	unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE | unix.IN_ATTRIB |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

// dirWatcher signals changes in one directory through inotify. Events are
// coalesced: C holds at most one pending signal, and the receiver re-reads
// the directory. A directory that does not exist yet, or was replaced, is
// (re)watched by calling watch again, which the periodic re-check does.
type dirWatcher struct {
	dir  string
	f    *os.File
	c    chan struct{}
	done sync.WaitGroup
}

// newDirWatcher starts an inotify instance for dir. The directory need not
// exist yet.
func newDirWatcher(dir string) (*dirWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify init: %w", err)
	}
	// A non-blocking fd joins the runtime poller, so Close ends a Read.
	w := &dirWatcher{dir: dir, f: os.NewFile(uintptr(fd), "inotify"), c: make(chan struct{}, 1)}
	w.done.Add(1)
	go w.read()
	return w, nil
}

// watch adds (or renews) the watch on the directory. It is cheap and
// idempotent; it fails while the directory does not exist.
func (w *dirWatcher) watch() error {
	var err error
	rc, cerr := w.f.SyscallConn()
	if cerr != nil {
		return fmt.Errorf("inotify: %w", cerr)
	}
	cerr = rc.Control(func(fd uintptr) {
		_, err = unix.InotifyAddWatch(int(fd), w.dir, watchMask)
	})
	if cerr != nil {
		return fmt.Errorf("inotify: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("watch %s: %w", w.dir, err)
	}
	return nil
}

// read turns inotify events into signals on C until the file is closed.
func (w *dirWatcher) read() {
	defer w.done.Done()
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			// Queue overflow or a transient error: signal, the receiver
			// re-reads the directory anyway.
			w.signal()
			return
		}
		if n > 0 {
			w.signal()
		}
	}
}

// signal leaves one pending notification on C.
func (w *dirWatcher) signal() {
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// C receives a value after changes in the directory.
func (w *dirWatcher) C() <-chan struct{} { return w.c }

// close stops the watcher and waits for its reader.
func (w *dirWatcher) close() {
	_ = w.f.Close()
	w.done.Wait()
}
