package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// span is a half-open byte range [start, end) of a file.
type span struct{ start, end int }

// pluginSpan is one element of a conflist's plugins array.
type pluginSpan struct {
	span
	Type string
}

// conflist is a parsed network configuration list that remembers where each
// plugin sits in the original bytes, so edits can splice the file instead of
// re-encoding it: keys, order, formatting and the other plugins stay as they
// were.
type conflist struct {
	data       []byte
	Name       string
	CNIVersion string
	// openAt is the offset just after '[' of plugins, closeAt the offset of ']'.
	openAt, closeAt int
	Plugins         []pluginSpan
	// firstKeyIndent is the whitespace before the first top-level key on its
	// line, used as the indentation unit of inserted entries.
	firstKeyIndent string
}

// errNotObject marks a document whose top level is not a JSON object.
var errNotObject = errors.New("not a JSON object")

// parseConflist parses data as a conflist with an inline plugins list. The
// errors name the problem, not the file; callers add the file name.
func parseConflist(data []byte) (*conflist, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errNotObject
	}
	cl := &conflist{data: data, openAt: -1}
	cl.firstKeyIndent = lineIndent(data, int(dec.InputOffset()))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
		key, _ := tok.(string)
		switch key {
		case "plugins":
			if cl.openAt >= 0 {
				return nil, errors.New(`duplicate key "plugins"`)
			}
			if err := cl.parsePlugins(dec); err != nil {
				return nil, err
			}
			continue
		case "name", "cniVersion":
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, fmt.Errorf("invalid JSON: %w", err)
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, fmt.Errorf("%s is not a string", key)
			}
			if key == "name" {
				cl.Name = s
			} else {
				cl.CNIVersion = s
			}
			continue
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON: data after the top-level object")
	}
	if cl.openAt < 0 {
		return nil, errors.New("no inline plugins list")
	}
	if cl.Name == "" {
		return nil, errors.New("no name")
	}
	return cl, nil
}

// parsePlugins reads the value of the plugins key and records the spans of
// its elements.
func (cl *conflist) parsePlugins(dec *json.Decoder) error {
	// Peek at the value: Token would happily return a string or '{'.
	off := skipSpaceColon(cl.data, int(dec.InputOffset()))
	if off >= len(cl.data) || cl.data[off] != '[' {
		return errors.New("plugins is not a list")
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	cl.openAt = int(dec.InputOffset())
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("invalid JSON: %w", err)
		}
		end := int(dec.InputOffset())
		p := pluginSpan{span: span{start: end - len(raw), end: end}}
		var hdr struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(raw, &hdr); err != nil {
			return fmt.Errorf("plugin %d is not an object with a string type", len(cl.Plugins))
		}
		if hdr.Type == "" {
			return fmt.Errorf("plugin %d has no type", len(cl.Plugins))
		}
		p.Type = hdr.Type
		cl.Plugins = append(cl.Plugins, p)
	}
	if _, err := dec.Token(); err != nil { // ']'
		return fmt.Errorf("invalid JSON: %w", err)
	}
	cl.closeAt = int(dec.InputOffset()) - 1
	if len(cl.Plugins) == 0 {
		return errors.New("plugins is empty")
	}
	return nil
}

// withPlugins returns the document with the plugins array rebuilt from the
// original elements for which keep is true, followed by extra (already
// encoded entries, may be nil). Separators and whitespace are taken from the
// original array, so removing what was appended restores the original bytes.
func (cl *conflist) withPlugins(keep func(pluginSpan) bool, extra func(indent, unit string) []byte) []byte {
	d := cl.data
	leading := d[cl.openAt:cl.Plugins[0].start]
	trailing := d[cl.Plugins[len(cl.Plugins)-1].end:cl.closeAt]
	var body bytes.Buffer
	lastSep := leading // the separator (with comma) before the last kept element
	kept := 0
	for i, p := range cl.Plugins {
		if !keep(p) {
			continue
		}
		if kept == 0 {
			body.Write(leading)
			lastSep = leading
		} else {
			// The text that directly preceded this element, comma included;
			// i > 0 because an earlier element was kept.
			sep := d[cl.Plugins[i-1].end:p.start]
			body.Write(sep)
			lastSep = sep
		}
		body.Write(d[p.start:p.end])
		kept++
	}
	if extra != nil {
		ws := lastSep
		if j := bytes.LastIndexByte(ws, ','); j >= 0 {
			ws = ws[j+1:]
		}
		indent, unit := "", ""
		if nl := bytes.LastIndexByte(ws, '\n'); nl >= 0 {
			indent = string(ws[nl+1:])
			unit = cl.indentUnit(indent)
		}
		entry := extra(indent, unit)
		if kept == 0 {
			body.Write(leading)
		} else {
			body.WriteByte(',')
			body.Write(ws)
		}
		body.Write(entry)
	}
	body.Write(trailing)
	out := make([]byte, 0, len(d)+body.Len())
	out = append(out, d[:cl.openAt]...)
	out = append(out, body.Bytes()...)
	out = append(out, d[cl.closeAt:]...)
	return out
}

// indentUnit guesses the file's indentation unit: the indentation of the
// first top-level key when it is on its own line, else two spaces deeper
// than elemIndent.
func (cl *conflist) indentUnit(elemIndent string) string {
	if cl.firstKeyIndent != "" {
		return cl.firstKeyIndent
	}
	if elemIndent != "" {
		return "  "
	}
	return ""
}

// lineIndent returns the whitespace between the last newline before the
// next token at or after off and that token, or "" when the token is on
// the same line as what precedes it.
func lineIndent(d []byte, off int) string {
	i := off
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n') {
		i++
	}
	ws := d[off:i]
	nl := bytes.LastIndexByte(ws, '\n')
	if nl < 0 {
		return ""
	}
	return string(ws[nl+1:])
}

// skipSpaceColon skips JSON whitespace and a key/value colon from off.
func skipSpaceColon(d []byte, off int) int {
	for off < len(d) {
		switch d[off] {
		case ' ', '\t', '\r', '\n', ':':
			off++
		default:
			return off
		}
	}
	return off
}
