package cniapi

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// PendingDir is the folder, next to the daemon socket, where the plugin
// leaves deregistrations the daemon could not receive.
func PendingDir(socket string) string {
	return filepath.Join(filepath.Dir(socket), "pending-del")
}

// WritePending records that a was deleted while the daemon was unreachable.
// The file is written to a temporary name and renamed, so the daemon never
// reads half of it.
func WritePending(socket string, a Attachment) error {
	if err := a.Validate(); err != nil {
		return err
	}
	dir := PendingDir(socket)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pending dir: %w", err)
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("create pending file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write pending file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write pending file: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, a.Key())); err != nil {
		return fmt.Errorf("rename pending file: %w", err)
	}
	return nil
}

// ClearPending removes a pending deregistration of a, if any; the plugin
// calls it before a new ADD of the same attachment.
func ClearPending(socket string, a Attachment) error {
	err := os.Remove(filepath.Join(PendingDir(socket), a.Key()))
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove pending file: %w", err)
	}
	return nil
}

// ReadPending lists the pending deregistrations under socket's folder.
// Files that do not parse are returned in bad so the caller can log and
// remove them.
func ReadPending(socket string) (pending []Attachment, bad []string, err error) {
	dir := PendingDir(socket)
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read pending dir: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		a, perr := ParseKey(e.Name())
		if perr != nil {
			bad = append(bad, filepath.Join(dir, e.Name()))
			continue
		}
		pending = append(pending, a)
	}
	return pending, bad, nil
}
