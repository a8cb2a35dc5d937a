package run

// The set-ups: switching the bench pods between direct, HAProxy sidecars
// and meshless (transparent, unix socket, sockmap).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meshless/meshless/bench/report"
	"github.com/meshless/meshless/internal/lab"
)

// haproxyConfig is a sidecar's configuration: outbound listener to the
// original destination (or the race service's balancer), inbound listener
// to the app on 127.0.0.1.
func (b *bench) haproxyConfig() string {
	var race strings.Builder
	for i, ref := range []string{crossSrv, race2, race3} {
		p, _ := b.l.Pod(ref)
		fmt.Fprintf(&race, "    server r%d %s:%d\n", i+1, p.IP, appPort)
	}
	return haproxyDefaults + fmt.Sprintf(`frontend out
    bind 0.0.0.0:%d
    use_backend race if { dst %s }
    default_backend orig
backend orig
    # 0.0.0.0 and no port: the original destination (SO_ORIGINAL_DST).
    server orig 0.0.0.0
backend race
    balance roundrobin
%sfrontend in
    bind 0.0.0.0:%d
    default_backend local
backend local
    server app 127.0.0.1:%d
`, hapOut, raceVIP, race.String(), hapIn, appPort)
}

// sidecarRules redirect the pod's TCP like a sidecar mesh's init
// container does: outbound (but HAProxy's own, uid 65534, and loopback)
// to the outbound listener, inbound to the app port to the inbound one.
const sidecarRules = `table ip benchsidecar {
  chain out {
    type nat hook output priority -100; policy accept;
    meta skuid 65534 return
    ip daddr 127.0.0.0/8 return
    meta l4proto tcp redirect to :%d
  }
  chain in {
    type nat hook prerouting priority -100; policy accept;
    tcp dport %d redirect to :%d
  }
}
`

// lossRules drop half the SYNs to the app port, before any NAT.
const lossRules = `table inet benchloss {
  chain pre {
    type filter hook prerouting priority -300; policy accept;
    tcp dport %d tcp flags & (syn | ack) == syn numgen random mod 2 == 0 drop
  }
}
`

func (b *bench) startHAProxy(l *lab.Lab, ref string) error {
	cfgPath := filepath.Join(b.workRoot, l.Name(), "haproxy", strings.ReplaceAll(ref, "/", "-")+".cfg")
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
		return err
	}
	conf := b.sidecarConfigFor(l)
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		return err
	}
	cmd := exec.Command("haproxy", "-db", "-f", cfgPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := l.Start(ref, cmd); err != nil {
		return err
	}
	b.haproxy[ref] = cmd
	time.Sleep(50 * time.Millisecond)
	if !alive(cmd.Process.Pid) {
		cmd.Wait()
		return fmt.Errorf("haproxy in %s exited: %s", ref, stderr.String())
	}
	return nil
}

func (b *bench) sidecarConfigFor(l *lab.Lab) string {
	if l == b.l {
		return b.haproxyConfig()
	}
	// The memory lab's sidecars: the same shape, no race service.
	return b.haproxyConfigNoRace()
}

// haproxyDefaults opens every sidecar's configuration.
const haproxyDefaults = `global
    uid 65534
    gid 65534
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    retries 3
`

func (b *bench) haproxyConfigNoRace() string {
	return haproxyDefaults + fmt.Sprintf(`frontend out
    bind 0.0.0.0:%d
    default_backend orig
backend orig
    server orig 0.0.0.0
frontend in
    bind 0.0.0.0:%d
    default_backend local
backend local
    server app 127.0.0.1:%d
`, hapOut, hapIn, appPort)
}

// nftIn runs nft -f - with script inside the pod.
func nftIn(l *lab.Lab, ref, script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := l.Run(ref, cmd); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", ref, err, out.String())
	}
	return nil
}

// apply switches the bench pods to setup.
func (b *bench) apply(setup string) error {
	if err := b.daemonMode(setup == report.Sockmap); err != nil {
		return err
	}
	spec := meshSpec()
	for _, ref := range benchPods {
		// Native keeps the pods' meshless rules, as in a Meshlet: its
		// calls use no TCP, so they never apply.
		mesh := setup == report.Meshless || setup == report.UDS || setup == report.Sockmap || setup == report.Native
		be := b.backend[ref]
		err := b.l.InPod(ref, func() error {
			if mesh {
				return be.Apply(spec)
			}
			return be.Remove()
		})
		if err != nil {
			return fmt.Errorf("%s rules in %s: %w", setup, ref, err)
		}
		script := "table ip benchsidecar\ndelete table ip benchsidecar\n"
		if setup == report.Sidecar {
			script += fmt.Sprintf(sidecarRules, hapOut, appPort, hapIn)
		}
		if err := nftIn(b.l, ref, script); err != nil {
			return err
		}
		p, _ := b.l.Pod(ref)
		link := b.udsLink(p)
		os.Remove(link)
		if setup == report.UDS && slices.Contains(serverPods, ref) {
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(b.privSocket(p), link); err != nil {
				return err
			}
		}
	}
	b.setup = setup
	return nil
}

// daemonArgs are the main lab daemons' flags.
func (b *bench) daemonArgs() []string {
	return []string{"--pprof", "--meshlet-dir", b.meshlet}
}

// daemonMode restarts both daemons with or without --sockmap, when that
// changes.
func (b *bench) daemonMode(sockmap bool) error {
	if sockmap == b.sockmapOn {
		return nil
	}
	args := b.daemonArgs()
	if sockmap {
		args = append(args, "--sockmap")
	}
	for _, n := range b.l.Nodes() {
		if err := b.l.RestartDaemonWith(context.Background(), n.Name, args); err != nil {
			return fmt.Errorf("restart %s (sockmap %v): %w", n.Name, sockmap, err)
		}
	}
	b.sockmapOn = sockmap
	return nil
}
