package meshletdir

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLongSocketPath: a socket in a folder as deep as the kubelet's pod
// folders (over the 107 bytes a socket address holds) is bound, dialled,
// and removed on close.
func TestLongSocketPath(t *testing.T) {
	for _, depth := range []int{1, 12} {
		dir := t.TempDir()
		for range depth {
			dir = filepath.Join(dir, strings.Repeat("d", 10))
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "server", "web")
		os.MkdirAll(filepath.Dir(path), 0o755)
		ln, err := Listen(path)
		if err != nil {
			t.Fatalf("listen %d bytes: %v", len(path), err)
		}
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.Write([]byte("hi"))
				c.Close()
			}
		}()
		c, err := Dial(context.Background(), path)
		if err != nil {
			t.Fatalf("dial %d bytes: %v", len(path), err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "hi" {
			t.Errorf("%d bytes: read %q", len(path), b)
		}
		ln.Close()
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("%d bytes: socket left after close: %v", len(path), err)
		}
	}
}
