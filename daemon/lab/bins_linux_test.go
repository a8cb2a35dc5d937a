package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	testBinsOnce sync.Once
	testBinDir   string
	testCNIDir   string
	testBinsErr  error
)

// testBins returns the bin dir (meshlessd, meshless-cni) and the reference
// plugins' dir: MESHLESS_BIN_DIR and MESHLESS_CNI_BIN_DIR when set (make
// test), else built once per test binary.
func testBins(t *testing.T) (binDir, cniDir string) {
	t.Helper()
	testBinsOnce.Do(func() { testBinDir, testCNIDir, testBinsErr = buildTestBins() })
	if testBinsErr != nil {
		t.Fatalf("binaries: %v", testBinsErr)
	}
	return testBinDir, testCNIDir
}

func buildTestBins() (string, string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	tmp, err := os.MkdirTemp("", "meshless-lab-bins-")
	if err != nil {
		return "", "", err
	}
	binDir := os.Getenv("MESHLESS_BIN_DIR")
	if binDir == "" {
		binDir = filepath.Join(tmp, "bin")
		for name, pkg := range map[string]string{
			"meshlessd":    "./daemon/cmd/meshlessd",
			"meshless-cni": "./plugin/cmd/meshless-cni",
		} {
			if err := goRun(root, "build", "-o", filepath.Join(binDir, name), pkg); err != nil {
				return "", "", err
			}
		}
	}
	cniDir := os.Getenv("MESHLESS_CNI_BIN_DIR")
	if cniDir == "" {
		if _, err := os.Stat(filepath.Join(root, ".cache", "cni", "bin", "bridge")); err == nil {
			return binDir, filepath.Join(root, ".cache", "cni", "bin"), nil
		}
		cniDir = filepath.Join(tmp, "cni")
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/containernetworking/plugins").Output()
		if err != nil {
			return "", "", fmt.Errorf("plugins version: %w", err)
		}
		v := strings.TrimSpace(string(out))
		// `go install pkg@version` builds with the plugins' own go.mod, so
		// their dependencies need not be in this module's go.sum.
		for _, p := range []string{"main/bridge", "main/loopback", "ipam/host-local"} {
			pkg := "github.com/containernetworking/plugins/plugins/" + p + "@" + v
			if err := goRun(tmp, "install", pkg); err != nil {
				return "", "", err
			}
		}
		if err := os.Rename(filepath.Join(tmp, "gobin"), cniDir); err != nil {
			return "", "", err
		}
	}
	return binDir, cniDir, nil
}

func goRun(dir string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if args[0] == "install" {
		cmd.Env = append(cmd.Env, "GOBIN="+filepath.Join(dir, "gobin"))
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}
