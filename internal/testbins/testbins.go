// Package testbins gives integration tests the project's binaries and the
// reference CNI plugins, built once per test binary.
//
//	b := testbins.Get(t)
//	exec.Command(b.Path("meshlessd"), ...)
//
// MESHLESS_BIN_DIR and MESHLESS_CNI_BIN_DIR name prebuilt folders (as `make
// test` sets them); otherwise the binaries are built from this tree and the
// reference plugins taken from .cache/cni/bin or built at the version
// go.mod pins, so `go test` works on its own.
package testbins

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
	// RefDir holds the reference plugins: bridge, host-local, loopback.
	RefDir string
	// CNIDir holds the reference plugins and meshless-cni (symlinks): one
	// CNI_PATH for the whole chain.
	CNIDir string
}

// Path returns the full path of one of the project's binaries.
func (b Bins) Path(name string) string { return filepath.Join(b.Dir, name) }

var (
	once sync.Once
	bins Bins
	err  error
)

// Get returns the binaries, building what the environment does not
// provide. The first failure fails every caller.
func Get(t testing.TB) Bins {
	t.Helper()
	once.Do(func() { bins, err = locate() })
	if err != nil {
		t.Fatalf("binaries: %v", err)
	}
	return bins
}

var projectBins = map[string]string{
	"meshless-cni": "./plugin/cmd/meshless-cni",
	"meshlessd":    "./daemon/cmd/meshlessd",
	"meshlessctl":  "./install/cmd/meshlessctl",
}

var refPlugins = []string{"main/bridge", "main/loopback", "ipam/host-local"}

func locate() (Bins, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return Bins{}, fmt.Errorf("cannot locate module root")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	// Under the repository's .cache (ignored by git), not /tmp: a test
	// binary cannot know when its last test is done with these, so they
	// stay behind, and there they are easy to find and clean (make clean).
	cache := filepath.Join(root, ".cache", "testbins")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return Bins{}, err
	}
	tmp, err := os.MkdirTemp(cache, "bins-")
	if err != nil {
		return Bins{}, err
	}
	b := Bins{Dir: os.Getenv("MESHLESS_BIN_DIR"), RefDir: os.Getenv("MESHLESS_CNI_BIN_DIR"), CNIDir: filepath.Join(tmp, "cni")}
	if b.Dir == "" {
		b.Dir = filepath.Join(tmp, "bin")
		for name, pkg := range projectBins {
			if err := goBuild(root, filepath.Join(b.Dir, name), pkg); err != nil {
				return b, err
			}
		}
	}
	if b.RefDir == "" {
		b.RefDir = filepath.Join(root, ".cache", "cni", "bin")
		if _, err := os.Stat(filepath.Join(b.RefDir, "bridge")); err != nil {
			b.RefDir = filepath.Join(tmp, "ref")
			for _, p := range refPlugins {
				// tools.go keeps these in go.mod at the pinned version.
				if err := goBuild(root, filepath.Join(b.RefDir, filepath.Base(p)), "github.com/containernetworking/plugins/plugins/"+p); err != nil {
					return b, err
				}
			}
		}
	}
	if err := os.MkdirAll(b.CNIDir, 0o755); err != nil {
		return b, err
	}
	for _, p := range refPlugins {
		if err := os.Symlink(filepath.Join(b.RefDir, filepath.Base(p)), filepath.Join(b.CNIDir, filepath.Base(p))); err != nil {
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
