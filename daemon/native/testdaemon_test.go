package native

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// nativeDir returns a fresh native API directory with its client/ and
// server/ subdirectories, short enough for a socket path (108 bytes).
func nativeDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if len(d)+len("/server/")+MaxServiceLen >= 108 {
		var err error
		if d, err = os.MkdirTemp("", "nat"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	for _, sub := range []string{"client", ServerDir} {
		if err := os.Mkdir(filepath.Join(d, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// refusals are the services the test daemon refuses, with its message.
var refusals = map[string]Reply{
	"gone":    {Status: StatusUnknownService, Message: "no meshlet shop/frontend serves gone"},
	"private": {Status: StatusNotAllowed, Message: "meshlet shop/cart does not declare shop/frontend/private"},
	"empty":   {Status: StatusNoInstance},
	"busy":    {Status: StatusAllFull, Message: "3 of 3 instances at maxConn 1"},
	"down":    {Status: StatusUnreachable, Message: "dial 198.19.2.2:8080: connection refused"},
	"broken":  {Status: StatusInternal},
	"future":  {Status: 42, Message: "a status from a later version"},
}

// daemonResult is what the test daemon decoded from one client.
type daemonResult struct {
	req Request
	err error
	// afterHandoff is what the daemon read on the client's connection
	// after a handoff: io.EOF once Dial closed it.
	afterHandoff error
}

// testDaemon is a minimal node daemon on dir/client/meshless, built from
// the package's daemon side only (ReadRequest, StatusFor, WriteReply,
// SendConn). By the requested service:
//
//   - "echo": OK, then relays by echoing, with half-close;
//   - "pair": OK with a handoff of one end of a socketpair whose other
//     end runs answerServer;
//   - "dgram": OK with a handoff of a datagram socket (a daemon bug);
//   - "hang": never answers;
//   - a name of refusals: that refusal;
//   - anything else: OK with a handoff of a connection to
//     dir/server/<service>, or StatusNoInstance if that fails.
type testDaemon struct {
	dir     string
	timeout time.Duration // for the request; RequestTimeout when 0
	results chan daemonResult
}

// startDaemon starts a testDaemon on dir; it stops with the test.
func startDaemon(t *testing.T, dir string, timeout time.Duration) *testDaemon {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, ClientSocket), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	d := &testDaemon{dir: dir, timeout: timeout, results: make(chan daemonResult, 100)}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); close(done) })
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			go d.serve(c, done)
		}
	}()
	return d
}

func (d *testDaemon) serve(c *net.UnixConn, done chan struct{}) {
	defer c.Close()
	timeout := d.timeout
	if timeout == 0 {
		timeout = RequestTimeout
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	req, err := ReadRequest(c)
	res := daemonResult{req: req, err: err}
	defer func() { d.results <- res }()
	if err != nil {
		WriteReply(c, Reply{Status: StatusFor(err), Message: err.Error()})
		return
	}
	c.SetReadDeadline(time.Time{})
	if rep, ok := refusals[req.Service]; ok {
		WriteReply(c, rep)
		return
	}
	switch req.Service {
	case "echo":
		WriteReply(c, Reply{})
		io.Copy(c, c)
		c.CloseWrite()
		return
	case "hang":
		<-done
		return
	}
	server, err := d.connectServer(req.Service)
	if err != nil {
		WriteReply(c, Reply{Status: StatusNoInstance, Message: err.Error()})
		return
	}
	err = WriteReply(c, Reply{Handoff: true})
	if err == nil {
		err = SendConn(c, server)
	}
	// The daemon's copy goes now, or the server would not see the
	// client's close.
	server.Close()
	if err != nil {
		res.afterHandoff = err
		return
	}
	// Dial closes its connection to the daemon once handed over.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, res.afterHandoff = c.Read(make([]byte, 1))
}

// connectServer returns the connection the daemon hands over for service.
func (d *testDaemon) connectServer(service string) (*net.UnixConn, error) {
	switch service {
	case "pair":
		a, b, err := socketPair(syscall.SOCK_STREAM)
		if err != nil {
			return nil, err
		}
		go answerServer(b)
		return a, nil
	case "dgram":
		a, b, err := socketPair(syscall.SOCK_DGRAM)
		if err != nil {
			return nil, err
		}
		b.Close()
		return a, nil
	}
	return net.DialUnix("unix", nil, &net.UnixAddr{Name: filepath.Join(d.dir, ServerDir, service), Net: "unix"})
}
