package registry

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile swaps content in by rename, as careful writers do.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	writeFile(t, path+".tmp", content)
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func regWithNodes(names ...string) string {
	var b strings.Builder
	b.WriteString("nodes:\n")
	for i, n := range names {
		b.WriteString("  - {name: " + n + ", address: 198.18.0." + string(rune('1'+i)) + "}\n")
	}
	return b.String()
}

func nodeNames(r *Registry) string {
	var s []string
	for _, n := range r.Nodes {
		s = append(s, n.Name)
	}
	return strings.Join(s, ",")
}

// pollEvents returns a watcher on path and a function that polls it once
// and returns the callbacks that poll made, as "ok:<node names>" or
// "err:<message>".
func pollEvents(path string) func() []string {
	var ev []string
	w := &Watcher{
		Path:     path,
		OnChange: func(r *Registry) { ev = append(ev, "ok:"+nodeNames(r)) },
		OnError:  func(err error) { ev = append(ev, "err:"+err.Error()) },
	}
	return func() []string {
		ev = nil
		w.Poll()
		return ev
	}
}

func TestWatcherPoll(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/reg.yaml"
	poll := pollEvents(p)
	steps := []struct {
		name   string
		change func()
		want   string // prefix of the single event, "" for none
	}{
		{"missing at start", func() {}, "err:stat registry"},
		{"still missing: reported once", func() {}, ""},
		{"created", func() { writeFile(t, p, regWithNodes("a")) }, "ok:a"},
		{"unchanged", func() {}, ""},
		{"in-place rewrite, same size", func() { writeFile(t, p, regWithNodes("b")) }, "ok:b"},
		{"renamed over", func() { replaceFile(t, p, regWithNodes("b", "c")) }, "ok:b,c"},
		{"touched, same content", func() {
			now := time.Now().Add(time.Hour)
			if err := os.Chtimes(p, now, now); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"invalid: caller keeps the last good", func() { replaceFile(t, p, "nodes:\n  - {name: x}\n") }, "err:registry " + p + ": nodes[0].address: required (line 2)"},
		{"still invalid: reported once", func() {}, ""},
		{"other invalid content", func() { replaceFile(t, p, "nodes: [") }, "err:registry " + p + ": parse yaml"},
		{"previous good content again", func() { replaceFile(t, p, regWithNodes("b", "c")) }, "ok:b,c"},
		{"deleted", func() { os.Remove(p) }, "err:stat registry"},
		{"recreated with the same content", func() { writeFile(t, p, regWithNodes("b", "c")) }, "ok:b,c"},
		{"truncated: an error, not an empty table", func() { writeFile(t, p, "") }, "err:registry " + p + ": empty file"},
		{"explicitly empty registry", func() { writeFile(t, p, "{}") }, "ok:"},
	}
	for _, st := range steps {
		st.change()
		got := poll()
		switch {
		case st.want == "" && len(got) != 0:
			t.Fatalf("%s: events %q, want none", st.name, got)
		case st.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], st.want)):
			t.Fatalf("%s: events %q, want one starting %q", st.name, got, st.want)
		}
	}
}

func TestWatchRun(t *testing.T) {
	p := t.TempDir() + "/reg.yaml"
	writeFile(t, p, regWithNodes("a"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := make(chan string, 10)
	w := &Watcher{
		Path:     p,
		Interval: 5 * time.Millisecond,
		OnChange: func(r *Registry) { ev <- "ok:" + nodeNames(r) },
		OnError:  func(err error) { ev <- "err:" + err.Error() },
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for _, want := range []string{"ok:a", "err:", "ok:b"} {
		select {
		case e := <-ev:
			if !strings.HasPrefix(e, want) {
				t.Fatalf("event %q, want %q", e, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event, want %q", want)
		}
		switch want {
		case "ok:a":
			replaceFile(t, p, "bad")
		case "err:":
			replaceFile(t, p, regWithNodes("b"))
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

func TestWatchReturnsOnCancel(t *testing.T) {
	p := t.TempDir() + "/reg.yaml"
	writeFile(t, p, regWithNodes("a"))
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *Registry, 1)
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, p, func(r *Registry) { got <- r }, nil) }()
	select {
	case r := <-got:
		if nodeNames(r) != "a" {
			t.Fatalf("got %s", nodeNames(r))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no initial registry")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return")
	}
}
