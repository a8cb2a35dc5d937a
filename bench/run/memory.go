package run

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/meshless/meshless/bench/load"
	"github.com/meshless/meshless/bench/report"
	"github.com/meshless/meshless/internal/lab"
)

// memoryLab builds one node with p.memPods pods: the memory of its one
// daemon against as many HAProxy sidecars, then the CNI ADD latency with
// and without meshless-cni.
func (b *bench) memoryLab(ctx context.Context) (err error) {
	work := filepath.Join(b.workRoot, b.memName)
	meshlet := filepath.Join(work, "meshlet")
	if err := os.MkdirAll(meshlet, 0o755); err != nil {
		return err
	}
	b.logf("lab %s: 1 node x %d pods", b.memName, b.p.memPods)
	t0 := time.Now()
	l, err := lab.Up(ctx, lab.Options{Name: b.memName, Nodes: 1, Pods: b.p.memPods, BinDir: b.cfg.BinDir, CNIBinDir: b.cfg.CNIBinDir,
		DaemonArgs: []string{"--meshlet-dir", meshlet}})
	if err != nil {
		return err
	}
	b.logf("lab %s up in %v", b.memName, time.Since(t0).Round(time.Millisecond))
	var sidecars []*exec.Cmd
	defer func() {
		for _, c := range sidecars {
			stop(c)
		}
		if derr := l.Down(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = derr
		}
	}()
	if b.want("memory") {
		m, cmds, err := b.memory(ctx, l)
		sidecars = cmds
		if err != nil {
			return err
		}
		b.res.Memory = m
		b.logf("memory: meshlessd %.1f MiB (after traffic %.1f) vs %d HAProxy: RSS sum %.1f MiB, PSS sum %.1f MiB",
			m.DaemonRSSMiB, m.DaemonRSSAfterMiB, m.Pods, m.SidecarRSSSumMiB, m.SidecarPSSSumMiB)
		for _, c := range sidecars {
			stop(c)
		}
		sidecars = nil
	}
	if b.want("cni") {
		c, err := b.cniLatency(ctx, l)
		if err != nil {
			return err
		}
		b.res.CNI = c
		b.logf("cni add: without meshless p50 %.1fms p99 %.1fms, with p50 %.1fms p99 %.1fms", c.WithoutP50ms, c.WithoutP99ms, c.WithP50ms, c.WithP99ms)
	}
	return nil
}

func (b *bench) memory(ctx context.Context, l *lab.Lab) (*report.Memory, []*exec.Cmd, error) {
	n, err := l.Node(1)
	if err != nil {
		return nil, nil, err
	}
	m := &report.Memory{Pods: len(l.Pods())}
	time.Sleep(time.Second)
	if m.DaemonRSSMiB, err = statusMiB(n.PID, "VmRSS"); err != nil {
		return nil, nil, err
	}
	// One connection from every pod to p1's echo server, through the mesh.
	srv := exec.Command(filepath.Join(b.cfg.BinDir, "benchapp"), "server", "-tcp", fmt.Sprintf("0.0.0.0:%d", appPort))
	if err := l.Start("n1/p1", srv); err != nil {
		return nil, nil, err
	}
	defer stop(srv)
	p1, _ := l.Pod("n1/p1")
	addr := net.JoinHostPort(p1.IP.String(), fmt.Sprint(appPort))
	time.Sleep(200 * time.Millisecond)
	msg := make([]byte, 1025)
	msg[0] = load.ModeEcho
	for _, p := range l.Pods()[1:] {
		err := l.InPod(p.Ref, func() error {
			c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(msg); err != nil {
				return err
			}
			_, err = io.ReadFull(c, make([]byte, 1024))
			return err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("traffic from %s: %w", p.Ref, err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if m.DaemonRSSAfterMiB, err = statusMiB(n.PID, "VmRSS"); err != nil {
		return nil, nil, err
	}
	if m.DaemonHWMMiB, err = statusMiB(n.PID, "VmHWM"); err != nil {
		return nil, nil, err
	}
	// The sidecars: one HAProxy per pod, as a sidecar mesh runs them.
	var cmds []*exec.Cmd
	for _, p := range l.Pods() {
		if err := b.startHAProxy(l, p.Ref); err != nil {
			return nil, cmds, err
		}
		cmds = append(cmds, b.haproxy[p.Ref])
		delete(b.haproxy, p.Ref)
	}
	time.Sleep(time.Second)
	var rss []float64
	for _, c := range cmds {
		r, err := statusMiB(c.Process.Pid, "VmRSS")
		if err != nil {
			return nil, cmds, err
		}
		p, err := pssMiB(c.Process.Pid)
		if err != nil {
			return nil, cmds, err
		}
		rss = append(rss, r)
		m.SidecarRSSSumMiB += r
		m.SidecarPSSSumMiB += p
	}
	m.SidecarOneRSSMiB = round3(load.Median(rss))
	m.SidecarRSSSumMiB, m.SidecarPSSSumMiB = round3(m.SidecarRSSSumMiB), round3(m.SidecarPSSSumMiB)
	return m, cmds, nil
}

// cniLatency times CNI ADD (loopback, then the pod network) of fresh pods
// through the node's chain with and without meshless-cni, alternating.
func (b *bench) cniLatency(ctx context.Context, l *lab.Lab) (*report.CNI, error) {
	n, err := l.Node(1)
	if err != nil {
		return nil, err
	}
	ndir := filepath.Join(l.Dir(), "n1")
	mk := func(meshless bool) (*lab.Chain, error) {
		cc := lab.ChainConfig{
			Bridge: "cnibench", Subnet: cniSubnet,
			IPAMDir:  filepath.Join(ndir, "bench-ipam"),
			CacheDir: filepath.Join(ndir, "bench-cni-cache"),
			BinDir:   filepath.Join(l.Dir(), "cni-bin"),
		}
		if meshless {
			cc.Meshless = map[string]any{"daemonSocket": n.Socket, "logFile": filepath.Join(ndir, "bench-cni.log")}
		}
		return lab.NewChain(lab.NetnsPath(n.Netns), cc)
	}
	with, err := mk(true)
	if err != nil {
		return nil, err
	}
	without, err := mk(false)
	if err != nil {
		return nil, err
	}
	type pod struct {
		chain *lab.Chain
		sb    lab.Sandbox
		ns    string
	}
	var pods []pod
	defer func() {
		for _, p := range pods {
			p.chain.Teardown(context.WithoutCancel(ctx), p.sb)
			exec.Command("ip", "netns", "del", p.ns).Run()
		}
	}()
	var tw, to []int64
	for i := range b.p.cniPods * 2 {
		c, useWith := without, i%4 == 1 || i%4 == 2 // with/without alternate, order swapped every pair
		if useWith {
			c = with
		}
		// Named like the lab's pods, so lab down removes them after a crash.
		name := fmt.Sprintf("%s-n1-p%d", b.memName, 1001+i)
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
		}
		sb := lab.Sandbox{ContainerID: fmt.Sprintf("bench-cni-%d", i), Netns: lab.NetnsPath(name), Namespace: "default",
			Name: fmt.Sprintf("cni-%d", i), UID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i)}
		pods = append(pods, pod{c, sb, name})
		t := time.Now()
		if _, err := c.Setup(ctx, sb); err != nil {
			return nil, fmt.Errorf("cni add %s: %w", name, err)
		}
		d := int64(time.Since(t))
		if useWith {
			tw = append(tw, d)
		} else {
			to = append(to, d)
		}
	}
	pw, po := load.Summarize(tw), load.Summarize(to)
	ms := func(us float64) float64 { return round3(us / 1000) }
	return &report.CNI{Pods: b.p.cniPods,
		WithP50ms: ms(pw.P50), WithP99ms: ms(pw.P99), WithoutP50ms: ms(po.P50), WithoutP99ms: ms(po.P99),
		AddedP50ms: ms(pw.P50 - po.P50), AddedP99ms: ms(pw.P99 - po.P99)}, nil
}
