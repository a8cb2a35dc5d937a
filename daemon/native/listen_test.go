package native

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListenServes(t *testing.T) {
	dir := nativeDir(t)
	lc := ListenConfig{Dir: dir}
	ln, err := lc.Listen("web")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ServerDir, "web")
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != DefaultSocketMode {
		t.Fatalf("socket %s: %v, %v", path, fi.Mode(), err)
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			answerServer(c)
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	halfCloseExchange(t, c, []byte("ping"), invert([]byte("ping")))
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind after Close: %v", err)
	}
}

func TestListenMode(t *testing.T) {
	dir := nativeDir(t)
	old := syscall.Umask(0o077) // as restrictive as an app may run with
	defer syscall.Umask(old)
	for _, mode := range []fs.FileMode{0, 0o660} {
		lc := ListenConfig{Dir: dir, Mode: mode}
		ln, err := lc.Listen("web")
		if err != nil {
			t.Fatal(err)
		}
		want := mode
		if want == 0 {
			want = DefaultSocketMode
		}
		if fi, err := os.Lstat(filepath.Join(dir, ServerDir, "web")); err != nil || fi.Mode().Perm() != want {
			t.Errorf("mode %v: socket has %v, %v", mode, fi.Mode().Perm(), err)
		}
		ln.Close()
	}
}

func TestListenValidatesNames(t *testing.T) {
	dir := nativeDir(t)
	lc := ListenConfig{Dir: dir}
	for _, name := range []string{"", ".", "..", "../web", "web/x", "/etc/passwd", "Web", "web.v2", "-web", "web-",
		"we b", "web\x00", strings.Repeat("a", 64)} {
		if ln, err := lc.Listen(name); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) succeeded", name)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, ServerDir))
	if len(ents) != 0 {
		t.Errorf("refused names left %d files", len(ents))
	}
	for _, name := range []string{"a", "web", "9lives", "grpc-v2", strings.Repeat("a", 63)} {
		ln, err := lc.Listen(name)
		if err != nil {
			t.Errorf("Listen(%q): %v", name, err)
			continue
		}
		ln.Close()
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	dir := nativeDir(t)
	path := filepath.Join(dir, ServerDir, "web")
	// A server that died without cleaning up leaves its socket.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatal(err)
	}
	lc := ListenConfig{Dir: dir}
	ln, err := lc.Listen("web")
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the new socket does not accept: %v", err)
	}
	c.Close()
}

func TestListenRefusesLiveSocket(t *testing.T) {
	dir := nativeDir(t)
	lc := ListenConfig{Dir: dir}
	first, err := lc.Listen("web")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if ln, err := lc.Listen("web"); !errors.Is(err, ErrInUse) {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("second Listen = %v, want ErrInUse", err)
	}
	// The first server still owns its socket.
	c, err := net.Dial("unix", filepath.Join(dir, ServerDir, "web"))
	if err != nil {
		t.Fatalf("first server lost its socket: %v", err)
	}
	c.Close()
}

func TestListenKeepsNonSocketFiles(t *testing.T) {
	dir := nativeDir(t)
	lc := ListenConfig{Dir: dir}
	path := filepath.Join(dir, ServerDir, "web")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, ServerDir, "api"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/hostname", filepath.Join(dir, ServerDir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web", "api", "link"} {
		if ln, err := lc.Listen(name); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) replaced a file that is not a socket", name)
		}
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Errorf("file after Listen: %q, %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, ServerDir, "link")); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("symlink after Listen: %v", err)
	}
}

func TestListenNeedsTheDirectory(t *testing.T) {
	lc := ListenConfig{Dir: filepath.Join(t.TempDir(), "nowhere")}
	if ln, err := lc.Listen("web"); !errors.Is(err, fs.ErrNotExist) {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("Listen without the directory = %v", err)
	}
}

func TestDirFromEnvironment(t *testing.T) {
	dir := nativeDir(t)
	t.Setenv(DirEnv, dir)
	ln, err := Listen("web")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := ln.Addr().String(); got != filepath.Join(dir, ServerDir, "web") {
		t.Errorf("listening on %s", got)
	}
	t.Setenv(DirEnv, "")
	if got := (&Dialer{}).socket(); got != filepath.Join(DefaultDir, ClientSocket) {
		t.Errorf("default client socket %s", got)
	}
}
