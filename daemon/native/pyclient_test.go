package native

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pythonClient returns the example client of docs/native-api.md, written
// to a file, so that the page's code is the code that is tested.
func pythonClient(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "native-api.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, code, ok := strings.Cut(string(doc), "```python\n")
	if ok {
		code, _, ok = strings.Cut(code, "\n```")
	}
	if !ok {
		t.Fatal("docs/native-api.md has no python block")
	}
	path := filepath.Join(t.TempDir(), "meshless_dial.py")
	if err := os.WriteFile(path, []byte(code+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPythonClientFromDocs(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	script := pythonClient(t)
	dir := nativeDir(t)
	startDaemon(t, dir, 0)
	lc := ListenConfig{Dir: dir}
	ln, err := lc.Listen("web")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go answerServer(c)
		}
	}()
	p := payload(t)[:200000]
	tests := []struct {
		target string
		want   []byte
		code   int
		stderr string
	}{
		{"shop/frontend/web", invert(p), 0, ""}, // handed over
		{"shop/frontend/echo", p, 0, ""},        // relayed
		{"shop/frontend/busy", nil, 2, "all full: 3 of 3 instances at maxConn 1"},
		{"shop/frontend/Bad", nil, 2, "malformed request"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			cmd := exec.Command(python, script, tt.target)
			cmd.Env = append(os.Environ(), DirEnv+"="+dir)
			cmd.Stdin = bytes.NewReader(p)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
				t.Fatalf("exit %d, stderr %q; want %d, %q", code, stderr.String(), tt.code, tt.stderr)
			}
			if !bytes.Equal(stdout.Bytes(), tt.want) {
				t.Fatalf("answer of %d bytes differs from the %d expected", stdout.Len(), len(tt.want))
			}
		})
	}
}
