// Package harness starts the real Meshless binaries and the reference CNI
// plugins for the project's integration tests.
//
//	bins := harness.Binaries(t)        // bin/ from `make build`, or built now
//	d := harness.StartDaemon(t, bins, harness.DaemonOptions{})
//	defer d.Stop()
//
// Binaries come from MESHLESS_BIN_DIR and MESHLESS_CNI_BIN_DIR when set (as
// `make test` does); otherwise they are built once per test binary into a
// temporary folder, so `go test ./tests/...` works on its own.
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// Bins locates the executables tests run.
type Bins struct {
	// Dir holds meshless-cni, meshlessd and meshlessctl.
	Dir string
	// CNIDir holds the reference plugins (bridge, host-local, loopback) and,
	// as a symlink, meshless-cni: one CNI_PATH for the whole chain.
	CNIDir string
}

// Path returns the full path of one of the project's binaries.
func (b Bins) Path(name string) string { return filepath.Join(b.Dir, name) }

var (
	buildOnce sync.Once
	buildBins Bins
	buildErr  error
)

// Binaries returns the binaries, building what the environment does not
// provide. The first failure fails every caller.
func Binaries(t testing.TB) Bins {
	t.Helper()
	buildOnce.Do(func() { buildBins, buildErr = locate() })
	if buildErr != nil {
		t.Fatalf("binaries: %v", buildErr)
	}
	return buildBins
}

func locate() (Bins, error) {
	root, err := moduleRoot()
	if err != nil {
		return Bins{}, err
	}
	tmp, err := os.MkdirTemp("", "meshless-bins-")
	if err != nil {
		return Bins{}, err
	}
	b := Bins{Dir: os.Getenv("MESHLESS_BIN_DIR"), CNIDir: filepath.Join(tmp, "cni")}
	if b.Dir == "" {
		b.Dir = filepath.Join(tmp, "bin")
		for name, pkg := range map[string]string{
			"meshless-cni": "./plugin/cmd/meshless-cni",
			"meshlessd":    "./daemon/cmd/meshlessd",
			"meshlessctl":  "./daemon/cmd/meshlessctl",
		} {
			if err := goBuild(root, filepath.Join(b.Dir, name), pkg); err != nil {
				return b, err
			}
		}
	}
	ref := os.Getenv("MESHLESS_CNI_BIN_DIR")
	if ref == "" {
		ref = filepath.Join(tmp, "ref")
		for _, p := range []string{"main/bridge", "main/loopback", "ipam/host-local"} {
			if err := goBuild(root, filepath.Join(ref, filepath.Base(p)), "github.com/containernetworking/plugins/plugins/"+p); err != nil {
				return b, err
			}
		}
	}
	if err := os.MkdirAll(b.CNIDir, 0o755); err != nil {
		return b, err
	}
	for _, p := range []string{"bridge", "loopback", "host-local"} {
		if err := os.Symlink(filepath.Join(ref, p), filepath.Join(b.CNIDir, p)); err != nil {
			return b, err
		}
	}
	if err := os.Symlink(b.Path("meshless-cni"), filepath.Join(b.CNIDir, "meshless-cni")); err != nil {
		return b, err
	}
	return b, nil
}

func goBuild(root, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate module root")
	}
	return filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
}
