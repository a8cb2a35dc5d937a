package lab

import (
	"fmt"
	"os"
	"path/filepath"
)

// referencePlugins are the reference CNI plugins the lab's chain uses.
var referencePlugins = []string{"bridge", "host-local", "loopback"}

// DefaultBinDir is where meshlessd and meshless-cni are looked for when
// Options.BinDir is empty: $MESHLESS_BIN_DIR, else the folder of the
// running executable (meshlessctl sits next to them in bin/).
func DefaultBinDir() (string, error) {
	if d := os.Getenv("MESHLESS_BIN_DIR"); d != "" {
		return d, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locate executable: %w", err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Dir(exe), nil
}

// DefaultCNIBinDir is where the reference plugins are looked for when
// Options.CNIBinDir is empty: $MESHLESS_CNI_BIN_DIR, else the repository's
// .cache/cni/bin next to binDir (what `make cni-plugins` fills), else
// /opt/cni/bin.
func DefaultCNIBinDir(binDir string) string {
	if d := os.Getenv("MESHLESS_CNI_BIN_DIR"); d != "" {
		return d
	}
	cache := filepath.Join(binDir, "..", ".cache", "cni", "bin")
	if _, err := os.Stat(filepath.Join(cache, "bridge")); err == nil {
		return filepath.Clean(cache)
	}
	return "/opt/cni/bin"
}

// checkExecutable fails unless path is an executable regular file.
func checkExecutable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("missing binary: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// makeCNIBinDir makes dir a CNI_PATH of symlinks: the reference plugins
// from refDir and meshless-cni from binDir, checking that each exists.
func makeCNIBinDir(dir, binDir, refDir string) error {
	links := map[string]string{"meshless-cni": filepath.Join(binDir, "meshless-cni")}
	for _, p := range referencePlugins {
		links[p] = filepath.Join(refDir, p)
	}
	if err := checkExecutable(filepath.Join(binDir, "meshlessd")); err != nil {
		return fmt.Errorf("bin dir %s: %w", binDir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cni bin dir: %w", err)
	}
	for name, target := range links {
		abs, err := filepath.Abs(target)
		if err != nil {
			return fmt.Errorf("cni bin dir: %w", err)
		}
		if err := checkExecutable(abs); err != nil {
			return fmt.Errorf("cni bin dir (build the reference plugins with `make cni-plugins` or pass --cni-bin-dir): %w", err)
		}
		link := filepath.Join(dir, name)
		os.Remove(link)
		if err := os.Symlink(abs, link); err != nil {
			return fmt.Errorf("cni bin dir: %w", err)
		}
	}
	return nil
}
