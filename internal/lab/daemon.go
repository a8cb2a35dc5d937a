package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/daemon/identity"
)

// Bounds of the lab's polling loops.
const (
	readyTimeout = 20 * time.Second
	stopTimeout  = 10 * time.Second
	pollInterval = 25 * time.Millisecond
)

// daemonArgs is node n's meshlessd command line, without the program.
func (s *State) daemonArgs(n *NodeState) []string {
	return append([]string{
		"--node-name", n.Name,
		"--socket", n.Socket,
		"--state-dir", n.DaemonStateDir,
		"--registry", s.Registry,
		"--tunnel-addr", net.JoinHostPort(n.Address, "15008"),
		"--admin-addr", n.AdminAddr,
		"--tls-dir", n.TLSDir,
		"--meshlet-dir", s.MeshletDir(),
	}, n.ExtraArgs...)
}

// issueTLS makes the lab's CA and every node's TLS material: the lab runs
// with the mutual TLS tunnel on, as users do (meshlessctl ca init, ca
// issue).
func (s *State) issueTLS() error {
	s.CADir = filepath.Join(s.Dir, "ca")
	if _, err := identity.InitCA(s.CADir, identity.CAOptions{}); err != nil {
		return fmt.Errorf("lab CA: %w", err)
	}
	for _, n := range s.Nodes {
		if _, err := identity.IssueNode(s.CADir, n.Name, n.TLSDir, identity.IssueOptions{}); err != nil {
			return fmt.Errorf("tls material of %s: %w", n.Name, err)
		}
	}
	return s.save()
}

// startDaemon starts node n's meshlessd inside the node netns, in its own
// session so it outlives the lab command, logging to n.Log, and records
// its PID in the state. It does not wait for readiness.
func (s *State) startDaemon(n *NodeState) error {
	for _, d := range []string{filepath.Dir(n.Socket), n.DaemonStateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("daemon dir: %w", err)
		}
	}
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("daemon log: %w", err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer devnull.Close()
	cmd := exec.Command(filepath.Join(s.BinDir, "meshlessd"), s.daemonArgs(n)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.Dir = n.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := inNetns(n.Netns, cmd.Start); err != nil {
		return fmt.Errorf("start meshlessd on %s: %w", n.Name, err)
	}
	// Reap it if it dies while this process lives (tests); after the lab
	// command exits it is init's child.
	go cmd.Wait()
	n.PID = cmd.Process.Pid
	return s.save()
}

// isLabDaemon reports whether pid is a live meshlessd serving node n's
// socket: the check before signalling a recorded PID, which may have been
// reused since.
func isLabDaemon(pid int, n *NodeState) bool {
	if pid <= 0 || !pidAlive(pid) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) == 0 || filepath.Base(args[0]) != "meshlessd" {
		return false
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--socket" && args[i+1] == n.Socket {
			return true
		}
	}
	return false
}

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// daemonsInNetns lists the meshlessd processes living in the named netns:
// the daemons of a crashed Up whose PID never reached the state file.
func daemonsInNetns(name string) []int {
	ino, err := netnsInode(name)
	if err != nil {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil || st.Ino != ino {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil && filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == "meshlessd" && pidAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopPID sends SIGTERM to pid and polls until it is gone, then SIGKILL;
// it returns once the process no longer runs or after the bounds.
func stopPID(pid int) error {
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("signal %d: %w", pid, err)
	}
	if waitGone(pid, stopTimeout) {
		return nil
	}
	unix.Kill(pid, unix.SIGKILL)
	if waitGone(pid, stopTimeout) {
		return nil
	}
	return fmt.Errorf("process %d still running after SIGKILL", pid)
}

// waitGone polls until pid is no longer alive or d passed.
func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval) // polling interval
	}
	return true
}

// httpGet fetches http://addr+path from inside the named netns: the
// connection's socket is made there, so 127.0.0.1 is the node's loopback.
func httpGet(ctx context.Context, netnsName, addr, path string) (int, []byte, error) {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			var c net.Conn
			err := inNetns(netnsName, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, a)
				return err
			})
			return c, err
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("get %s: %w", path, err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("get %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, b, fmt.Errorf("read %s: %w", path, err)
	}
	return resp.StatusCode, b, nil
}

// waitReady polls node n's /readyz from inside its netns until it answers
// 200, the daemon exits, or readyTimeout passes.
func waitReady(ctx context.Context, n *NodeState) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	last := "no answer"
	for {
		if !pidAlive(n.PID) {
			return fmt.Errorf("meshlessd on %s exited before ready; log %s:\n%s", n.Name, n.Log, tailFile(n.Log, 20))
		}
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		code, body, err := httpGet(rctx, n.Netns, n.AdminAddr, "/readyz")
		rcancel()
		switch {
		case err == nil && code == http.StatusOK:
			return nil
		case err != nil:
			last = err.Error()
		default:
			last = fmt.Sprintf("%d %s", code, strings.TrimSpace(string(body)))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("meshlessd on %s not ready (%s): %w", n.Name, last, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// tailFile returns the last n lines of a file, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
