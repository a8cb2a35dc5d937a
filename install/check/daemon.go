package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/meshless/meshless/daemon/cniapi"
)

// daemonFix is what to do when the node's daemon does not answer.
const daemonFix = "start meshlessd on this node (on Kubernetes: the meshless DaemonSet's pod), or pass --socket"

// checkSocket passes when the daemon answers GET /v1/status on its unix
// socket: the one the plugin registers pods on.
func checkSocket(ctx context.Context, socket, from string) Result {
	st, err := cniapi.NewClient(socket).Status(ctx)
	if errors.Is(err, cniapi.ErrUnreachable) {
		return fail(daemonFix, "no daemon on %s (%s): %v", socket, from, cause(err))
	}
	if err != nil {
		return fail("read the daemon's log", "GET /v1/status on %s: %v", socket, err)
	}
	return ok("node %s answers on %s (%s), discovery %s", st.Node, socket, from, st.Discovery)
}

// checkReady passes when the daemon says it is ready on its socket: state
// restored, listeners open. The plugin waits for this before pods start.
func checkReady(ctx context.Context, socket string) Result {
	err := cniapi.NewClient(socket).Ready(ctx)
	if errors.Is(err, cniapi.ErrUnreachable) {
		return fail(daemonFix, "no daemon on %s", socket)
	}
	if err != nil {
		return fail("read the daemon's log (on Kubernetes: kubectl -n meshless-system logs ds/meshless)", "%v", err)
	}
	return ok("ready")
}

// checkAdmin passes when GET /readyz on the admin address answers 200,
// what the DaemonSet's readiness probe asks.
func checkAdmin(ctx context.Context, addr string) Result {
	if addr == "" {
		return skip("--admin-addr is empty")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return fail("pass --admin-addr HOST:PORT", "%v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fail("start meshlessd, or pass the --admin-addr it was started with (run this in the daemon's network namespace)", "%s: %v", addr, cause(err))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	body := strings.TrimSpace(string(b))
	if resp.StatusCode != http.StatusOK {
		return fail("read the daemon's log", "http://%s/readyz: %s %s", addr, resp.Status, body)
	}
	return ok("http://%s/readyz: %s", addr, body)
}

// cause is the system call error under err, if any: the one part of a
// dial error that says what is wrong.
func cause(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se
	}
	return err
}

// socketOrigin says where the socket path came from, for the report.
func socketOrigin(flag string, c chain) (string, string) {
	switch {
	case flag != "":
		return flag, "--socket"
	case c.entry != nil:
		return c.str("daemonSocket", defaultSocket), fmt.Sprintf("from %s", c.file)
	}
	return defaultSocket, "default"
}
