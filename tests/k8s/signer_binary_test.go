package k8s

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshless/meshless/internal/testenv"
)

// signerBinary is bin/meshless-signer of `make build` (MESHLESS_BIN_DIR),
// or built now from this tree.
func signerBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("MESHLESS_BIN_DIR"); dir != "" {
		p := filepath.Join(dir, "meshless-signer")
		if _, err := os.Stat(p); err != nil {
			testenv.Missing(t, p+": run `make build`")
		}
		return p
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "meshless-signer")
	cmd := exec.Command("go", "build", "-o", p, "./install/cmd/meshless-signer")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build meshless-signer: %v\n%s", err, out)
	}
	return p
}

// testSignerBinary runs the meshless-signer command as the Deployment
// would (its own account's token, through a kubeconfig here): it gets
// ready (the CA loaded, the bundle published), serves its metrics, and
// exits 0 on SIGTERM.
func testSignerBinary(ctx context.Context, t *testing.T, e *signerEnv) {
	bin := signerBinary(t)
	kubeconfig := filepath.Join(t.TempDir(), "signer.kubeconfig")
	writeFile(t, kubeconfig, []byte(e.c.KubeconfigFor(e.token(ctx, t, signerNS, "meshless-signer", nil, ""))))
	admin := "127.0.0.1:" + strconv.Itoa(freePort(t))
	p := startLogged(t, "meshless-signer", filepath.Join(t.TempDir(), "signer.log"),
		exec.Command(bin, "--kubeconfig="+kubeconfig, "--admin-addr="+admin))
	defer p.stop(true)

	get := func(path string) (string, error) {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s: %s %s", path, resp.Status, b)
		}
		return string(b), nil
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if p.exited() {
			t.Fatalf("meshless-signer exited:\n%s", tail(p.log, 20))
		}
		_, err := get("/readyz")
		return err
	})
	if m, err := get("/metrics"); err != nil || !strings.Contains(m, `meshless_signer_requests_total{result="issued"} 0`) {
		t.Errorf("metrics: %v\n%s", err, m)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10 s after SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0:\n%s", code, tail(p.log, 20))
	}
}
