package run

// The main lab: its pods, servers, registry and the rule backends found
// in them.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/meshless/meshless/bench/report"
	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/lab"
	"github.com/meshless/meshless/internal/redirect"
)

// mainLab runs the rounds, the profile and the racing on a 2-node lab.
func (b *bench) mainLab(ctx context.Context) (err error) {
	b.work = filepath.Join(b.workRoot, b.mainName)
	b.meshlet = filepath.Join(b.work, "meshlet")
	for _, d := range []string{b.meshlet, filepath.Join(b.work, "sock")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	b.logf("lab %s: 2 nodes x 3 pods", b.mainName)
	l, err := lab.Up(ctx, lab.Options{Name: b.mainName, Nodes: 2, Pods: 3, BinDir: b.cfg.BinDir, CNIBinDir: b.cfg.CNIBinDir,
		DaemonArgs: b.daemonArgs()})
	if err != nil {
		return err
	}
	b.l = l
	defer func() {
		b.stopAll()
		if derr := l.Down(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = derr
		}
		b.l = nil
	}()
	if err := limitTimeWait(l); err != nil {
		return err
	}
	if err := b.writeRegistry(ctx); err != nil {
		return err
	}
	if err := b.findBackends(); err != nil {
		return err
	}
	for _, ref := range serverPods {
		pod, _ := l.Pod(ref)
		args := []string{"server", "-tcp", fmt.Sprintf("0.0.0.0:%d", appPort), "-unix", b.privSocket(pod)}
		if svc := nativeService(ref); svc != "" {
			args = append(args, "-native", svc)
		}
		cmd := exec.Command(filepath.Join(b.cfg.BinDir, "benchapp"), args...)
		cmd.Env = b.nativeEnv(pod)
		cmd.Stderr = os.Stderr
		if err := l.Start(ref, cmd); err != nil {
			return err
		}
		b.servers = append(b.servers, cmd)
	}
	for _, ref := range benchPods {
		if err := b.startHAProxy(b.l, ref); err != nil {
			return err
		}
	}
	if err := b.waitServers(ctx); err != nil {
		return err
	}
	if err := b.waitNative(ctx); err != nil {
		return err
	}
	b.setup = report.Meshless
	if b.want("rounds") {
		if err := b.rounds(ctx); err != nil {
			return err
		}
	}
	if b.want("profile") {
		b.res.Summarize()
		if err := b.profile(ctx); err != nil {
			b.res.Missing = append(b.res.Missing, "profile: "+err.Error())
			b.logf("profile: %v", err)
		}
	}
	if b.want("race") {
		if err := b.racing(ctx); err != nil {
			b.res.Missing = append(b.res.Missing, "racing: "+err.Error())
			b.logf("racing: %v", err)
		}
	}
	return nil
}

// stopAll kills the processes the bench started (by their PIDs).
func (b *bench) stopAll() {
	for _, c := range b.servers {
		stop(c)
	}
	b.servers = nil
	for ref, c := range b.haproxy {
		stop(c)
		delete(b.haproxy, ref)
	}
}

func stop(c *exec.Cmd) {
	if c == nil || c.Process == nil {
		return
	}
	c.Process.Kill()
	c.Wait()
}

// writeRegistry adds the race service and the native set-up's services
// and Meshlets to the lab's registry and waits until both daemons route
// the services.
func (b *bench) writeRegistry(ctx context.Context) error {
	err := b.l.SetServices(append([]lab.ServiceState{{Name: "race", VIP: raceVIP, Port: racePort, TargetPort: appPort,
		Endpoints: []string{crossSrv, race2, race3}}}, nativeServices()...))
	if err != nil {
		return err
	}
	if err := b.setNativeMeshlets(); err != nil {
		return err
	}
	return b.waitRoutes(ctx)
}

func (b *bench) waitRoutes(ctx context.Context) error {
	for _, n := range b.l.Nodes() {
		deadline := time.Now().Add(15 * time.Second)
		for {
			st, err := cniapi.NewClient(n.Socket).Status(ctx)
			// The lab's sample service, race and the native ones.
			if err == nil && len(st.Services) == 2+len(nativeServices()) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("daemon %s does not route the bench's services: %v", n.Name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// findBackends records which rule backend meshless-cni used in each pod,
// so the meshless rules can be removed and put back as they were.
func (b *bench) findBackends() error {
	spec := meshSpec()
	for _, ref := range benchPods {
		var found redirect.Backend
		for _, mode := range []redirect.Mode{redirect.ModeNFTables, redirect.ModeIPTables} {
			be, err := redirect.New(mode, redirect.WithHost(redirect.Detection{}))
			if err != nil {
				continue
			}
			if b.l.InPod(ref, func() error { return be.Check(spec) }) == nil {
				found = be
				break
			}
		}
		if found == nil {
			return fmt.Errorf("pod %s: meshless rules not found by either backend", ref)
		}
		b.backend[ref] = found
	}
	return nil
}

func meshSpec() redirect.Spec {
	s := redirect.DefaultSpec()
	s.IPv4 = true
	return s
}

func (b *bench) privSocket(p lab.Pod) string {
	return filepath.Join(b.work, "sock", p.Name+".sock")
}

func (b *bench) udsLink(p lab.Pod) string {
	return filepath.Join(b.podDir(p), "server", fmt.Sprint(appPort))
}

// waitServers waits until every server's unix socket exists.
func (b *bench) waitServers(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for _, ref := range serverPods {
		p, _ := b.l.Pod(ref)
		for {
			if _, err := os.Stat(b.privSocket(p)); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("server in %s did not start", ref)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// limitTimeWait caps TIME_WAIT sockets in every node and pod netns of l.
// The new-connection test opens tens of thousands of short connections per
// round; their TIME_WAIT entries would use up the ephemeral ports and, since
// a mesh connection is three TCP connections where a direct one is one,
// starve the mesh set-ups first and under-measure them. Above the cap the
// kernel drops TIME_WAIT entries at once.
func limitTimeWait(l *lab.Lab) error {
	set := func() error {
		return os.WriteFile("/proc/sys/net/ipv4/tcp_max_tw_buckets", []byte("256"), 0o644)
	}
	for _, n := range l.Nodes() {
		if err := n.Do(set); err != nil {
			return fmt.Errorf("node %s: tcp_max_tw_buckets: %w", n.Name, err)
		}
	}
	for _, p := range l.Pods() {
		if err := l.InPod(p.Ref, set); err != nil {
			return fmt.Errorf("pod %s: tcp_max_tw_buckets: %w", p.Ref, err)
		}
	}
	return nil
}
