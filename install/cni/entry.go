package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// PluginType is the CNI type of the Meshless plugin, and the name of its
// binary in the CNI bin dir.
const PluginType = "meshless-cni"

// defaultEntry is the configuration every inserted entry starts from; the
// --plugin-config snippet is merged onto it.
const defaultEntry = `{"type":"meshless-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true}}`

// member is one key of a JSON object, in document order.
type member struct {
	Key   string
	Value json.RawMessage
}

// object is a JSON object that keeps its key order.
type object []member

// parseObject decodes a JSON object, keeping key order and raw values.
func parseObject(data []byte) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errNotObject
	}
	var obj object
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
		obj = obj.set(key, v)
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("invalid JSON: data after the object")
	}
	return obj, nil
}

// get returns the value of key, or nil.
func (o object) get(key string) json.RawMessage {
	for _, m := range o {
		if m.Key == key {
			return m.Value
		}
	}
	return nil
}

// set replaces the value of key in place, or appends the key.
func (o object) set(key string, v json.RawMessage) object {
	for i := range o {
		if o[i].Key == key {
			o[i].Value = v
			return o
		}
	}
	return append(o, member{Key: key, Value: v})
}

// del removes key.
func (o object) del(key string) object {
	out := o[:0]
	for _, m := range o {
		if m.Key != key {
			out = append(out, m)
		}
	}
	return out
}

// marshal encodes the object compactly, in key order.
func (o object) marshal() []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.Key)
		b.Write(k)
		b.WriteByte(':')
		_ = json.Compact(&b, m.Value)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// merge returns base with overlay's keys merged in: objects on both sides
// are merged recursively, anything else is replaced. Key order is base's,
// then overlay's new keys.
func merge(base, overlay object) object {
	out := append(object(nil), base...)
	for _, m := range overlay {
		if bv := out.get(m.Key); bv != nil {
			bo, err1 := parseObject(bv)
			oo, err2 := parseObject(m.Value)
			if err1 == nil && err2 == nil {
				out = out.set(m.Key, merge(bo, oo).marshal())
				continue
			}
		}
		out = out.set(m.Key, m.Value)
	}
	return out
}

// Entry is the configuration of the meshless-cni entry that the installer
// inserts into the primary conflist, without its cniVersion (which follows
// the list).
type Entry struct {
	obj object
}

// NewEntry merges the JSON object snippet (may be empty) onto the default
// entry {"type":"meshless-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true}}.
// The snippet may not change the type; a cniVersion in it is ignored.
func NewEntry(snippet []byte) (*Entry, error) {
	base, err := parseObject([]byte(defaultEntry))
	if err != nil {
		return nil, fmt.Errorf("default entry: %w", err)
	}
	if len(bytes.TrimSpace(snippet)) == 0 {
		return &Entry{obj: base}, nil
	}
	over, err := parseObject(snippet)
	if err != nil {
		return nil, fmt.Errorf("plugin config: %w", err)
	}
	if t := over.get("type"); t != nil {
		var s string
		if json.Unmarshal(t, &s) != nil || s != PluginType {
			return nil, fmt.Errorf("plugin config: type must be %q, not %s", PluginType, t)
		}
	}
	if c := over.get("capabilities"); c != nil {
		if _, err := parseObject(c); err != nil {
			return nil, fmt.Errorf("plugin config: capabilities: %w", err)
		}
	}
	return &Entry{obj: merge(base, over.del("cniVersion"))}, nil
}

// encode returns the entry for a list of cniVersion version ("" for none),
// indented for a line that starts with indent, by unit per level (compact
// when unit is "").
func (e *Entry) encode(version, indent, unit string) []byte {
	obj := append(object{}, e.obj[0]) // type first
	if version != "" {
		v, _ := json.Marshal(version)
		obj = append(obj, member{Key: "cniVersion", Value: v})
	}
	obj = append(obj, e.obj[1:]...)
	raw := obj.marshal()
	if unit == "" {
		return raw
	}
	var b bytes.Buffer
	_ = json.Indent(&b, raw, indent, unit)
	return b.Bytes()
}

// knownKeys are the conf keys of meshless-cni (docs/cni-plugin.md) and the
// generic CNI ones.
var knownKeys = map[string]bool{
	"type": true, "name": true, "cniVersion": true, "capabilities": true, "runtimeConfig": true,
	"daemonSocket": true, "redirect": true, "failOpen": true, "excludeNamespaces": true,
	"excludeInboundPorts": true, "excludeOutboundPorts": true, "excludeOutboundCIDRs": true,
	"logFile": true,
}

// UnknownKeys returns the entry's keys that meshless-cni does not know,
// typically typos in --plugin-config.
func (e *Entry) UnknownKeys() []string {
	var out []string
	for _, m := range e.obj {
		if !knownKeys[m.Key] {
			out = append(out, m.Key)
		}
	}
	return out
}

// JSON returns the entry as inserted into a list of the given cniVersion,
// compact.
func (e *Entry) JSON(version string) []byte {
	return e.encode(version, "", "")
}
