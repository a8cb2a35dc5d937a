package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/internal/lab"
)

const (
	nginxPort   = 8080
	bigFileSize = 5 << 20
	// curlTimeout bounds each curl; curl's own --max-time is a bit less.
	curlTimeout = 60 * time.Second
)

// site is the content every nginx serves: a small index and a 5 MB
// random file.
type site struct {
	root      string // document root
	index     string
	bigSHA256 string
}

// makeSite writes the document root into a folder the nginx workers (user
// nobody) can read, removed when t ends.
func makeSite(t *testing.T) site {
	t.Helper()
	root := worldReadableDir(t, "meshless-e2e-www-")
	s := site{root: root, index: "<html><body>meshless e2e: served by nginx</body></html>\n"}
	if err := os.WriteFile(filepath.Join(root, "index.html"), []byte(s.index), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(root, "big.bin"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, bigFileSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s.bigSHA256 = hex.EncodeToString(h.Sum(nil))
	return s
}

// worldReadableDir makes a temporary folder with mode 0755, removed when t
// ends (t.TempDir's parent is private to root).
func worldReadableDir(t *testing.T, pattern string) string {
	t.Helper()
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// nginxConf is a complete configuration: every file nginx writes (pid,
// logs, temporary bodies) is under dir. The access log records who
// connected, as the server saw it.
const nginxConf = `worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log notice;
events { worker_connections 64; }
http {
    log_format e2e '$remote_addr $status $body_bytes_sent "$request"';
    access_log %[1]s/access.log e2e;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    types { text/html html; application/octet-stream bin; }
    default_type application/octet-stream;
    sendfile on;
    server {
        listen %[2]d;
        root %[3]s;
        index index.html;
    }
}
`

// nginx is one nginx serving the site in a pod.
type nginx struct {
	*server
	dir string
}

// startNginx runs nginx in the foreground in pod ref and waits until it
// answers on the pod's loopback.
func startNginx(t *testing.T, l *lab.Lab, bin, ref string, s site) *nginx {
	t.Helper()
	dir := worldReadableDir(t, "meshless-e2e-nginx-")
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, nginxPort, s.root), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, l, ref, filepath.Join(dir, "stdout.log"),
		bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	n := &nginx{server: srv, dir: dir}
	srv.log = filepath.Join(dir, "error.log")
	srv.waitReady(t, 15*time.Second, func() error { return probeHTTP(l, ref) })
	return n
}

// probeHTTP asks nginx for the index on the pod's loopback, which the
// Meshless rules do not redirect.
func probeHTTP(l *lab.Lab, ref string) error {
	var c net.Conn
	err := l.InPod(ref, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", nginxPort), time.Second)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: probe\r\n\r\n"); err != nil {
		return err
	}
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200 ") {
		return fmt.Errorf("status %q", strings.TrimSpace(status))
	}
	return nil
}

// accessLines returns the access log's lines.
func (n *nginx) accessLines() []string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "access.log"))
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// httpResult is what curl and nginx saw of one run of the workload.
type httpResult struct {
	IndexCode, IndexBody string
	BigCode              string
	BigSize              int64
	BigSHA256            string
	MissingCode          string
	// ServerLog is the access log lines the run added: the client address
	// nginx saw, status, bytes and request.
	ServerLog []string
}

// curlRequests is the number of curl runs, one connection each.
const curlRequests = 3

// runCurl fetches the index, the big file and a missing page from the
// server with curl, in pod client, each curl on its own connection, and
// waits until nginx has logged the three requests.
func runCurl(t *testing.T, l *lab.Lab, client string, srv *nginx, ip string) httpResult {
	t.Helper()
	out := t.TempDir()
	logged := len(srv.accessLines())
	get := func(path, file string) string {
		t.Helper()
		code, err := runIn(t, l, client, curlTimeout, "", "curl", "-sS", "--noproxy", "*",
			"--connect-timeout", "10", "--max-time", "50", "-o", file, "-w", "%{http_code}",
			fmt.Sprintf("http://%s:%d%s", ip, nginxPort, path))
		if err != nil {
			t.Fatalf("curl %s: %v", path, err)
		}
		return code
	}
	var r httpResult
	r.IndexCode = get("/", filepath.Join(out, "index"))
	r.BigCode = get("/big.bin", filepath.Join(out, "big"))
	r.MissingCode = get("/no-such-page", filepath.Join(out, "missing"))
	b, err := os.ReadFile(filepath.Join(out, "index"))
	if err != nil {
		t.Fatal(err)
	}
	r.IndexBody = string(b)
	f, err := os.Open(filepath.Join(out, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if r.BigSize, err = io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	r.BigSHA256 = hex.EncodeToString(h.Sum(nil))
	// nginx logs a request once it is done, which may be after curl exits.
	deadline := time.Now().Add(10 * time.Second)
	for len(srv.accessLines()) < logged+curlRequests && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	r.ServerLog = srv.accessLines()[logged:]
	return r
}

// checkHTTP compares a run's result with what the site holds.
func checkHTTP(t *testing.T, r httpResult, s site, clientIP string) {
	t.Helper()
	if r.IndexCode != "200" || r.IndexBody != s.index {
		t.Errorf("index: code %s, body %q; want 200, %q", r.IndexCode, r.IndexBody, s.index)
	}
	if r.BigCode != "200" || r.BigSize != bigFileSize || r.BigSHA256 != s.bigSHA256 {
		t.Errorf("big.bin: code %s, %d bytes, sha256 %s; want 200, %d bytes, sha256 %s",
			r.BigCode, r.BigSize, r.BigSHA256, bigFileSize, s.bigSHA256)
	}
	if r.MissingCode != "404" {
		t.Errorf("missing page: code %s, want 404", r.MissingCode)
	}
	want := []string{
		fmt.Sprintf(`%s 200 %d "GET / HTTP/1.1"`, clientIP, len(s.index)),
		fmt.Sprintf(`%s 200 %d "GET /big.bin HTTP/1.1"`, clientIP, bigFileSize),
		fmt.Sprintf(`%s 404 `, clientIP),
	}
	if len(r.ServerLog) != len(want) {
		t.Errorf("nginx logged %d requests, want %d: %q", len(r.ServerLog), len(want), r.ServerLog)
		return
	}
	for i, w := range want {
		if !strings.HasPrefix(r.ServerLog[i], w) {
			t.Errorf("nginx access log line %q, want it to start with %q", r.ServerLog[i], w)
		}
	}
}
