// Package demo is `meshlessctl demo`, what `make demo` runs: a two-node lab
// with three pods per node, mesh-unaware programs inside the pods, and a
// readable summary of the calls they make and the path each took through
// the daemons.
//
//	err := demo.Run(ctx, os.Stdout, demo.Options{BinDir: "bin"})
//
// The lab is torn down when Run returns, also when ctx is cancelled
// (Ctrl-C).
package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/meshless/meshless/internal/lab"
)

// Options configure a demo run.
type Options struct {
	// Name is the lab's prefix ("demo" when empty).
	Name string
	// BinDir holds meshlessd, meshless-cni, demo-server and demo-client.
	BinDir string
	// CNIBinDir holds the reference CNI plugins (lab default when empty).
	CNIBinDir string
	// Requests is the number of requests per call (20 when zero).
	Requests int
}

// call is one demonstrated request stream.
type call struct {
	title  string
	from   string // pod ref
	url    string
	expect string // path label the daemons should count
	// native, when set, is the namespace/meshlet/service demo-client
	// reaches through the native API instead of TCP.
	native string
}

// Run brings the lab up, makes the calls, prints the summary and tears the
// lab down.
func Run(ctx context.Context, out io.Writer, o Options) (err error) {
	if o.Name == "" {
		o.Name = "demo"
	}
	if o.Requests == 0 {
		o.Requests = 20
	}
	step := func(format string, a ...any) { fmt.Fprintf(out, "==> "+format+"\n", a...) }

	// A lab left over by an interrupted run goes first.
	if err := lab.Down(context.Background(), o.Name, "", io.Discard); err != nil {
		return fmt.Errorf("remove old lab: %w", err)
	}
	step("starting a lab: 2 nodes x 3 pods, one meshlessd per node, pods wired by bridge + host-local + meshless-cni")
	start := time.Now()
	l, err := lab.Up(ctx, lab.Options{Name: o.Name, Nodes: 2, Pods: 3, BinDir: o.BinDir, CNIBinDir: o.CNIBinDir, Log: prefixWriter(out, "    ")})
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	defer func() {
		step("tearing the lab down")
		if derr := l.Down(context.Background()); derr != nil && err == nil {
			err = fmt.Errorf("lab down: %w", derr)
		}
	}()
	step("lab ready in %s", time.Since(start).Round(time.Millisecond))

	servers, err := startServers(ctx, l, o.BinDir)
	if err != nil {
		return err
	}
	defer stopAll(servers)

	// The slow instance: n1/p1 drops every SYN to its app, like a stuck
	// pod. n1's daemon races it against n2/p1 for calls to the VIP.
	step("making n1/p1 a deliberately slow instance (drops every SYN to :8080)")
	if err := dropSYN(ctx, l, "n1/p1"); err != nil {
		return err
	}

	p := func(ref string) string {
		pod, _ := l.Pod(ref)
		return pod.IP.String()
	}
	calls := []call{
		{"same node: n1/p2 -> n1/p3", "n1/p2", "http://" + p("n1/p3") + ":8080/", "local", ""},
		{"cross node: n1/p2 -> n2/p3", "n1/p2", "http://" + p("n2/p3") + ":8080/", "remote", ""},
		{fmt.Sprintf("service VIP: n1/p2 -> web %s:%d (n1/p1 slow, n2/p1 healthy)", lab.ServiceVIP, lab.ServicePort),
			"n1/p2", fmt.Sprintf("http://%s:%d/", lab.ServiceVIP, lab.ServicePort), "remote", ""},
		{"native API: n1/p2 -> default/hello/hello (n1/p3)", "n1/p2", "http://hello/", "uds", "default/hello/hello"},
		{"native API: n1/p2 -> default/hello/hello-far (n2/p3)", "n1/p2", "http://hello/", "remote", "default/hello/hello-far"},
	}
	step("Meshlet hello: n1/p3 serves hello and n2/p3 hello-far on /meshlet/server/<service>; n1/p2 may call both")
	natives, err := startNative(ctx, l, o.BinDir)
	if err != nil {
		return err
	}
	defer stopAll(natives)
	var rows []row
	for _, c := range calls {
		step("%s", c.title)
		r, err := runCall(ctx, l, o, c)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	if curl, err := exec.LookPath("curl"); err == nil {
		step("curl, unmodified, from n2/p2 to the VIP")
		cmd := exec.CommandContext(ctx, curl, "-sS", "--max-time", "5", fmt.Sprintf("http://%s:%d/", lab.ServiceVIP, lab.ServicePort))
		var b bytes.Buffer
		cmd.Stdout, cmd.Stderr = &b, &b
		if err := l.Run("n2/p2", cmd); err != nil {
			return fmt.Errorf("curl: %w: %s", err, b.String())
		}
		fmt.Fprintf(out, "    %s", b.String())
	}
	printSummary(out, rows)
	for _, r := range rows {
		if r.unexpected {
			return fmt.Errorf("%s: the daemons took path %s", r.call.title, r.path)
		}
	}
	return nil
}

func prefixWriter(w io.Writer, prefix string) io.Writer {
	return &linePrefixer{w: w, prefix: prefix, bol: true}
}

type linePrefixer struct {
	w      io.Writer
	prefix string
	bol    bool
}

func (p *linePrefixer) Write(b []byte) (int, error) {
	var buf bytes.Buffer
	for _, c := range b {
		if p.bol {
			buf.WriteString(p.prefix)
		}
		buf.WriteByte(c)
		p.bol = c == '\n'
	}
	_, err := p.w.Write(buf.Bytes())
	return len(b), err
}

// binPath finds a demo program next to the other binaries.
func binPath(binDir, name string) (string, error) {
	if binDir == "" {
		d, err := lab.DefaultBinDir()
		if err != nil {
			return "", err
		}
		binDir = d
	}
	return filepath.Join(binDir, name), nil
}
