package check

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"

	"github.com/meshless/meshless/install/cni"
)

// installFix is the one command that puts the plugin in place on a node.
const installFix = "run `meshlessctl install-cni` (the DaemonSet's install-cni container does it)"

// chain is what the runtime will run: the first network config of the
// conf dir, as containerd and CRI-O pick it.
type chain struct {
	file  string
	types []string // plugin types in order
	// entry is meshless-cni's configuration; nil when not in the chain.
	entry map[string]any
	err   error // why there is no usable chain
	// elsewhere is a later file that has meshless-cni, for the hint.
	elsewhere string
}

// loadChain reads dir the way the runtime does: the lexically first file
// with a known extension that parses.
func loadChain(dir string) chain {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return chain{err: fmt.Errorf("read %s: %w", dir, err)}
	}
	sort.Strings(files)
	var c chain
	for _, f := range files {
		types, entry, err := readConf(f)
		if err != nil {
			continue // the runtime skips it too
		}
		if c.file == "" {
			c.file, c.types, c.entry = f, types, entry
			continue
		}
		if c.entry == nil && entry != nil && c.elsewhere == "" {
			c.elsewhere = f
		}
	}
	if c.file == "" {
		c.err = fmt.Errorf("no network config in %s", dir)
	}
	return c
}

// readConf returns the plugin types of a .conflist, or the one type of a
// .conf, and meshless-cni's entry if present.
func readConf(path string) ([]string, map[string]any, error) {
	if filepath.Ext(path) != ".conflist" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("conf %s: %w", path, err)
		}
		c, err := libcni.NetworkPluginConfFromBytes(data)
		if err != nil {
			return nil, nil, fmt.Errorf("conf %s: %w", path, err)
		}
		return []string{c.Network.Type}, nil, nil
	}
	l, err := libcni.ConfListFromFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("conflist %s: %w", path, err)
	}
	var types []string
	var entry map[string]any
	for _, p := range l.Plugins {
		types = append(types, p.Network.Type)
		if p.Network.Type == cni.PluginType {
			if err := json.Unmarshal(p.Bytes, &entry); err != nil {
				return nil, nil, fmt.Errorf("conflist %s: %s entry: %w", path, cni.PluginType, err)
			}
		}
	}
	return types, entry, nil
}

// str returns the entry's string key, or def.
func (c chain) str(key, def string) string {
	if s, ok := c.entry[key].(string); ok && s != "" {
		return s
	}
	return def
}

// checkChain passes when the runtime's network config is a conflist that
// chains meshless-cni after a primary plugin.
func checkChain(c chain, dir string) Result {
	if c.err != nil {
		return fail("install the primary CNI (it writes its config there), then "+installFix+"; or pass --cni-conf-dir", "%v", c.err)
	}
	i := slices.Index(c.types, cni.PluginType)
	switch {
	case i < 0 && c.elsewhere != "":
		return fail(installFix+" so the entry moves into "+filepath.Base(c.file),
			"%s is in %s, but the runtime uses %s (%s)", cni.PluginType, filepath.Base(c.elsewhere), filepath.Base(c.file), strings.Join(c.types, " -> "))
	case i < 0:
		return fail(installFix, "%s (%s) does not chain %s", filepath.Base(c.file), strings.Join(c.types, " -> "), cni.PluginType)
	case i == 0:
		return fail("install the primary CNI first; "+cni.PluginType+" chains after it", "%s runs %s first: no primary plugin gives the pod its network", filepath.Base(c.file), cni.PluginType)
	}
	return ok("%s: %s", filepath.Join(dir, filepath.Base(c.file)), strings.Join(c.types, " -> "))
}

// checkPluginBinary passes when meshless-cni is in the bin dir and answers
// the CNI VERSION command, as the runtime will call it.
func checkPluginBinary(ctx context.Context, binDir string) Result {
	path := filepath.Join(binDir, cni.PluginType)
	if err := executable(path); err != nil {
		return fail(installFix+"; or pass --cni-bin-dir", "%v", err)
	}
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fail("reinstall it: "+installFix, "%s VERSION: %v %s", path, err, strings.TrimSpace(stderr.String()))
	}
	var v struct {
		Supported []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &v); err != nil || len(v.Supported) == 0 {
		return fail("reinstall it: "+installFix, "%s VERSION answered %q", path, strings.TrimSpace(string(out)))
	}
	return ok("%s runs (CNI versions %s)", path, strings.Join(v.Supported, ", "))
}

// checkChainBinaries passes when every other plugin of the chain is in
// the bin dir: the runtime fails the whole chain on a missing one.
func checkChainBinaries(c chain, binDir string) Result {
	if c.err != nil {
		return skip("no network config to read the chain from")
	}
	var missing []string
	for _, t := range c.types {
		if t == cni.PluginType {
			continue
		}
		if err := executable(filepath.Join(binDir, t)); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fail("install the primary CNI's plugins into "+binDir+" (or pass --cni-bin-dir)", "missing from %s: %s", binDir, strings.Join(missing, ", "))
	}
	return ok("%s has %s", binDir, strings.Join(c.types, ", "))
}

// executable fails unless path is an executable regular file.
func executable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err // "stat PATH: why"
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}
