package cni

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// binMode is the mode of the installed plugin binary.
const binMode os.FileMode = 0o755

// DefaultPluginBin returns the default --plugin-bin: meshless-cni next to
// the running executable.
func DefaultPluginBin() string {
	exe, err := os.Executable()
	if err != nil {
		return PluginType
	}
	return filepath.Join(filepath.Dir(exe), PluginType)
}

// installBinary copies src to dir/meshless-cni with mode 0755, atomically
// (temp file in dir, fsync, rename). It reports whether it wrote anything:
// a destination with the same content and mode is left alone.
func installBinary(src, dir string) (bool, error) {
	dst := filepath.Join(dir, PluginType)
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("plugin binary: %w (set --plugin-bin)", err)
	}
	defer in.Close()
	sfi, err := in.Stat()
	if err != nil {
		return false, fmt.Errorf("plugin binary: %w", err)
	}
	if !sfi.Mode().IsRegular() {
		return false, fmt.Errorf("plugin binary %s is not a regular file", src)
	}
	if dfi, err := os.Stat(dst); err == nil && os.SameFile(sfi, dfi) {
		return false, nil // running from the bin dir itself
	}
	same, err := sameContent(in, sfi.Size(), dst)
	if err != nil {
		return false, err
	}
	if same {
		return false, nil
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("plugin binary: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("cni bin dir: %w", err)
	}
	meta := fileMeta{mode: binMode, uid: -1, gid: -1}
	if err := writeAtomic(dst, bufio.NewReader(in), meta, "", nil); err != nil {
		return false, fmt.Errorf("install %s: %w", dst, err)
	}
	return true, nil
}

// sameContent reports whether dst is a regular file of mode 0755 with the
// content of src (of size n).
func sameContent(src io.Reader, n int64, dst string) (bool, error) {
	out, err := os.Open(dst)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("compare %s: %w", dst, err)
	}
	defer out.Close()
	dfi, err := out.Stat()
	if err != nil {
		return false, fmt.Errorf("compare %s: %w", dst, err)
	}
	if !dfi.Mode().IsRegular() || dfi.Mode().Perm() != binMode || dfi.Size() != n {
		return false, nil
	}
	a, b := bufio.NewReaderSize(src, 64<<10), bufio.NewReaderSize(out, 64<<10)
	bufA, bufB := make([]byte, 32<<10), make([]byte, 32<<10)
	for {
		na, errA := io.ReadFull(a, bufA)
		nb, errB := io.ReadFull(b, bufB)
		if na != nb || !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		if errA == io.EOF || errA == io.ErrUnexpectedEOF {
			return errB == io.EOF || errB == io.ErrUnexpectedEOF, nil
		}
		if errA != nil {
			return false, fmt.Errorf("read plugin binary: %w", errA)
		}
		if errB != nil {
			return false, nil
		}
	}
}

// removeBinary removes dir/meshless-cni; a missing file is success.
func removeBinary(dir string) (bool, error) {
	dst := filepath.Join(dir, PluginType)
	err := os.Remove(dst)
	switch {
	case err == nil:
		return true, syncDir(dir)
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("remove %s: %w", dst, err)
	}
}
