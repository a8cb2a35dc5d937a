package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/libcni"
)

// errOnlyMeshless marks a conflist whose plugins are all meshless-cni: it is
// not a primary network, and removing the entry would leave it empty.
var errOnlyMeshless = errors.New("has no plugin besides " + PluginType)

func isMeshless(p pluginSpan) bool { return p.Type == PluginType }

// insertEntry returns the conflist data with every meshless-cni entry
// removed and e appended last to its plugins, in the list's cniVersion.
// Everything else keeps its bytes. When the result equals data apart from
// whitespace, data itself is returned.
func insertEntry(data []byte, e *Entry) ([]byte, error) {
	cl, err := parseConflist(data)
	if err != nil {
		return nil, err
	}
	if !hasOther(cl) {
		return nil, errOnlyMeshless
	}
	keep := func(p pluginSpan) bool { return !isMeshless(p) }
	out := cl.withPlugins(keep, func(indent, unit string) []byte {
		return e.encode(cl.CNIVersion, indent, unit)
	})
	if sameJSON(out, data) {
		return data, nil
	}
	if err := validate(out); err != nil {
		return nil, err
	}
	return out, nil
}

// removeEntry returns the conflist data without its meshless-cni entries,
// and whether there were any. Everything else keeps its bytes.
func removeEntry(data []byte) ([]byte, bool, error) {
	cl, err := parseConflist(data)
	if err != nil {
		return nil, false, err
	}
	found := false
	for _, p := range cl.Plugins {
		found = found || isMeshless(p)
	}
	if !found {
		return data, false, nil
	}
	if !hasOther(cl) {
		return nil, false, errOnlyMeshless
	}
	out := cl.withPlugins(func(p pluginSpan) bool { return !isMeshless(p) }, nil)
	if err := validateList(out); err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// convertConf turns a single-plugin conf into a conflist holding that
// plugin (its bytes re-indented, keys in their order) followed by e, the way
// libcni.ConfListFromConf sees a conf: the list takes the conf's name and
// cniVersion.
func convertConf(data []byte, e *Entry) ([]byte, error) {
	c, err := parseConf(data)
	if err != nil {
		return nil, err
	}
	if c.typ == PluginType {
		return nil, errOnlyMeshless
	}
	const unit = "  "
	var b bytes.Buffer
	b.WriteString("{\n")
	if c.version != "" {
		v, _ := json.Marshal(c.version)
		fmt.Fprintf(&b, "%s\"cniVersion\": %s,\n", unit, v)
	}
	n, _ := json.Marshal(c.name)
	fmt.Fprintf(&b, "%s\"name\": %s,\n", unit, n)
	fmt.Fprintf(&b, "%s\"plugins\": [\n%s%s", unit, unit, unit)
	if err := json.Indent(&b, bytes.TrimSpace(data), unit+unit, unit); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	fmt.Fprintf(&b, ",\n%s%s", unit, unit)
	b.Write(e.encode(c.version, unit+unit, unit))
	fmt.Fprintf(&b, "\n%s]\n}\n", unit)
	out := b.Bytes()
	if err := validate(out); err != nil {
		return nil, err
	}
	return out, nil
}

// conf is what the installer needs of a single-plugin network config.
type conf struct {
	name, version, typ string
}

// parseConf parses a .conf/.json network config as libcni does, and
// requires the name a conflist needs.
func parseConf(data []byte) (*conf, error) {
	pc, err := libcni.NetworkPluginConfFromBytes(data)
	if err != nil {
		if _, perr := parseObject(data); perr == nil && bytes.Contains(data, []byte(`"plugins"`)) {
			return nil, errors.New("no type (a list of plugins needs the .conflist extension)")
		}
		return nil, err
	}
	if pc.Network.Name == "" {
		return nil, errors.New("no name")
	}
	return &conf{name: pc.Network.Name, version: pc.Network.CNIVersion, typ: pc.Network.Type}, nil
}

// hasOther reports whether the list has a plugin that is not meshless-cni.
func hasOther(cl *conflist) bool {
	for _, p := range cl.Plugins {
		if !isMeshless(p) {
			return true
		}
	}
	return false
}

// validateList checks data as libcni loads a conflist, and as the installer
// parses it.
func validateList(data []byte) error {
	nc, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		return fmt.Errorf("libcni: %w", err)
	}
	if len(nc.Plugins) == 0 {
		return errors.New("libcni: no plugins")
	}
	if _, err := parseConflist(data); err != nil {
		return err
	}
	return nil
}

// validate checks a conflist the installer wrote: valid for libcni, and
// meshless-cni last and only once.
func validate(data []byte) error {
	if err := validateList(data); err != nil {
		return fmt.Errorf("result is invalid: %w", err)
	}
	nc, _ := libcni.NetworkConfFromBytes(data)
	n := 0
	for _, p := range nc.Plugins {
		if p.Network.Type == PluginType {
			n++
		}
	}
	if last := nc.Plugins[len(nc.Plugins)-1].Network.Type; last != PluginType || n != 1 {
		return fmt.Errorf("result is invalid: %s is not last and single", PluginType)
	}
	return nil
}

// sameJSON reports whether a and b are the same JSON apart from whitespace
// (key order counts).
func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}
