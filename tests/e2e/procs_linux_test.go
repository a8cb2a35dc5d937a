package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshless/meshless/tests/harness"

	"github.com/meshless/meshless/internal/lab"
	"golang.org/x/sys/unix"
)

// Bounds of the processes the suite starts.
const (
	stopTimeout = 10 * time.Second // SIGTERM to SIGKILL
	waitDelay   = 5 * time.Second  // pipes after a killed command
	// cleanupMargin is kept before go test's -timeout for the cleanups,
	// which a timeout panic would skip.
	cleanupMargin = 30 * time.Second
)

// Every process the suite starts leads its own process group (a server's
// workers join it), so it is stopped, and checked for, by group: the
// groups are recorded here.
var (
	groupsMu sync.Mutex
	groups   []int
)

func recordGroup(pgid int) {
	groupsMu.Lock()
	defer groupsMu.Unlock()
	groups = append(groups, pgid)
}

// groupMembers returns the live processes of process group pgid.
func groupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// leftoverProcs lists the live processes of the recorded groups.
func leftoverProcs() []int {
	groupsMu.Lock()
	defer groupsMu.Unlock()
	var pids []int
	for _, g := range groups {
		pids = append(pids, groupMembers(g)...)
	}
	return pids
}

// killLeftovers sends SIGKILL to the recorded groups that still run.
func killLeftovers() {
	groupsMu.Lock()
	defer groupsMu.Unlock()
	for _, g := range groups {
		if len(groupMembers(g)) > 0 {
			unix.Kill(-g, unix.SIGKILL)
		}
	}
}

// server is a long-running program inside a pod.
type server struct {
	name, ref, log string
	cmd            *exec.Cmd
	done           chan struct{} // closed when cmd has been waited for
	err            error         // cmd's exit, once done is closed
}

// startServer starts argv inside pod ref, unmodified, output to logPath,
// and stops it when t ends: SIGTERM to its process group, SIGKILL after
// stopTimeout.
func startServer(t *testing.T, l *lab.Lab, ref, logPath string, argv ...string) *server {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	s := &server{name: filepath.Base(argv[0]), ref: ref, log: logPath, done: make(chan struct{})}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := l.Start(ref, s.cmd); err != nil {
		t.Fatal(err)
	}
	recordGroup(s.cmd.Process.Pid)
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// exited reports whether the server has ended.
func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// stop ends the server's whole process group and waits for it, bounded.
func (s *server) stop() error {
	pgid := s.cmd.Process.Pid
	unix.Kill(-pgid, unix.SIGTERM)
	deadline := time.Now().Add(stopTimeout)
	for len(groupMembers(pgid)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	if len(groupMembers(pgid)) > 0 {
		unix.Kill(-pgid, unix.SIGKILL)
	}
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		return fmt.Errorf("%s in %s (pid %d) still running after SIGKILL", s.name, s.ref, pgid)
	}
	if left := groupMembers(pgid); len(left) > 0 {
		return fmt.Errorf("%s in %s: processes %v of its group outlived it", s.name, s.ref, left)
	}
	return nil
}

// waitReady polls probe (bounded by timeout) until it succeeds, failing t
// at once if the server exits.
func (s *server) waitReady(t *testing.T, timeout time.Duration, probe func() error) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		if s.exited() {
			t.Fatalf("%s in %s exited (%v) before accepting connections; log:\n%s", s.name, s.ref, s.err, tailFile(s.log))
		}
		err := probe()
		if err == nil {
			t.Logf("%s in %s ready after %s", s.name, s.ref, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s not ready within %v: %v; log:\n%s", s.name, s.ref, timeout, err, tailFile(s.log))
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

func tailFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	return harness.Tail(string(b), 20)
}

// runIn runs argv inside pod ref with stdin, bounded by timeout and by
// the test binary's deadline (less cleanupMargin), and returns its
// stdout; the error carries its stderr. A command that times out is
// killed with its whole process group.
func runIn(t *testing.T, l *lab.Lab, ref string, timeout time.Duration, stdin string, argv ...string) (string, error) {
	t.Helper()
	path, err := lookPath(argv[0])
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if d, ok := t.Deadline(); ok {
		var cancelD context.CancelFunc
		ctx, cancelD = context.WithDeadline(ctx, d.Add(-cleanupMargin))
		defer cancelD()
	}
	cmd := exec.CommandContext(ctx, path, argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = waitDelay
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := l.Start(ref, cmd); err != nil {
		return "", err
	}
	recordGroup(cmd.Process.Pid)
	err = cmd.Wait()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || ctx.Err() != nil {
			return stdout.String(), fmt.Errorf("%s in %s: %w; stderr: %s", strings.Join(argv, " "), ref, err, strings.TrimSpace(stderr.String()))
		}
		return stdout.String(), fmt.Errorf("%s in %s: %w", strings.Join(argv, " "), ref, err)
	}
	return stdout.String(), nil
}
