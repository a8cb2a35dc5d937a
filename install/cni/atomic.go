package cni

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// tempPattern names temp files: a leading dot and the .tmp extension keep
// them out of libcni.ConfFiles and the runtime's view.
const tempPattern = ".meshless-*.tmp"

// errChanged means the file changed between reading it and replacing it,
// typically because the primary CNI rewrote it; the caller reads it again.
var errChanged = errors.New("changed while being updated")

// fileMeta is what a replacement keeps of the file it replaces.
type fileMeta struct {
	mode     os.FileMode
	uid, gid int // -1: leave as created
}

// metaOf returns the permission bits and owner of fi.
func metaOf(fi os.FileInfo) fileMeta {
	m := fileMeta{mode: fi.Mode().Perm(), uid: -1, gid: -1}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		m.uid, m.gid = int(st.Uid), int(st.Gid)
	}
	return m
}

// writeAtomic replaces path with the bytes from src: it writes a temp file
// in the same directory, sets mode and owner, fsyncs it, checks that the
// file it is based on (based, with its stat from when it was read; nil for
// none) has not changed meanwhile, renames it over path and fsyncs the
// directory. On error nothing but path's old content remains.
func writeAtomic(path string, src io.Reader, meta fileMeta, based string, basedFI os.FileInfo) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tempPattern)
	if err != nil {
		return fmt.Errorf("create temp file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = io.Copy(f, src); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Chmod(meta.mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if meta.uid >= 0 && (meta.uid != os.Geteuid() || meta.gid != os.Getegid()) {
		if err = f.Chown(meta.uid, meta.gid); err != nil {
			return fmt.Errorf("chown %s: %w", tmp, err)
		}
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if basedFI != nil {
		if err = unchanged(based, basedFI); err != nil {
			return err
		}
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	return syncDir(dir)
}

// unchanged returns errChanged when path is no longer the file described
// by fi (replaced, rewritten or removed).
func unchanged(path string, fi os.FileInfo) error {
	now, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", path, errChanged)
		}
		return fmt.Errorf("stat: %w", err)
	}
	if !os.SameFile(now, fi) || !now.ModTime().Equal(fi.ModTime()) || now.Size() != fi.Size() {
		return fmt.Errorf("%s: %w", path, errChanged)
	}
	return nil
}

// syncDir fsyncs a directory so a rename or removal in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// readStat reads a file and returns the stat of the very file it read.
func readStat(path string) ([]byte, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, err
	}
	return data, fi, nil
}
