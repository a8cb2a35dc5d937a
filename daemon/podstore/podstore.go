// Package podstore persists the daemon's pod registrations, one JSON file
// per attachment, so a restarted daemon reopens its listeners in pods that
// still exist.
//
//	s, err := podstore.Open("/var/lib/meshless")
//	err = s.Save(pod)          // atomic: temp file, fsync, rename, fsync dir
//	pods, err := s.Load()      // err may carry unreadable files; pods still usable
//	err = s.Delete(pod.Attachment) // absent is fine
//
// Every write is atomic: a crash leaves either the old or the new file,
// never half of one.
package podstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/meshless/meshless/daemon/cniapi"
)

const (
	// ext is the suffix of state files.
	ext = ".json"
	// tmpPrefix marks files being written; Load ignores and removes them.
	tmpPrefix = ".tmp-"
)

// Store is a folder of pod state files. Its methods are safe for concurrent
// use on distinct attachments; the daemon serialises writes of one
// attachment itself.
type Store struct {
	dir string
}

// Open creates dir (mode 0700: the files name pods and netns paths) if
// needed and returns a store over it.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("state dir is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	// MkdirAll keeps the mode of an existing folder; tighten it.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chmod state dir: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Dir is the store's folder.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(a cniapi.Attachment) string {
	return filepath.Join(s.dir, a.Key()+ext)
}

// Save writes pod's state atomically, replacing any previous state of the
// same attachment.
func (s *Store) Save(pod *cniapi.Pod) error {
	if err := pod.Attachment.Validate(); err != nil {
		return fmt.Errorf("save pod: %w", err)
	}
	b, err := json.MarshalIndent(pod, "", "  ")
	if err != nil {
		return fmt.Errorf("encode pod: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("create state file: %w", err)
	}
	// Removing after a successful rename fails harmlessly.
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write state file: %w", err)
	}
	// fsync before rename: otherwise a crash can leave the new name
	// pointing at an empty file on some filesystems.
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path(pod.Attachment)); err != nil {
		return fmt.Errorf("rename state file: %w", err)
	}
	return s.syncDir()
}

// syncDir makes a rename or removal durable.
func (s *Store) syncDir() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("open state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state dir: %w", err)
	}
	return nil
}

// Delete removes the state of a. An absent state is not an error.
func (s *Store) Delete(a cniapi.Attachment) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("delete pod: %w", err)
	}
	err := os.Remove(s.path(a))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove state file: %w", err)
	}
	return s.syncDir()
}

// Load returns every stored pod, sorted by key. Leftover temporary files
// from a crash are removed. A file that cannot be read or parsed is skipped
// and reported in the returned error, together with the pods that did load:
// one bad file must not hide the others.
func (s *Store) Load() ([]cniapi.Pod, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read state dir: %w", err)
	}
	var pods []cniapi.Pod
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() {
			continue
		}
		if strings.HasPrefix(name, tmpPrefix) {
			os.Remove(filepath.Join(s.dir, name))
			continue
		}
		if !strings.HasSuffix(name, ext) {
			continue
		}
		pod, err := s.read(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pods = append(pods, *pod)
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Key() < pods[j].Key() })
	return pods, errors.Join(errs...)
}

func (s *Store) read(name string) (*cniapi.Pod, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	var pod cniapi.Pod
	if err := json.Unmarshal(b, &pod); err != nil {
		return nil, fmt.Errorf("parse state file %s: %w", name, err)
	}
	if pod.Key()+ext != name {
		return nil, fmt.Errorf("state file %s holds attachment %s", name, pod.Key())
	}
	if err := pod.Validate(); err != nil {
		return nil, fmt.Errorf("state file %s: %w", name, err)
	}
	return &pod, nil
}
