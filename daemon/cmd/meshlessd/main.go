// Command meshlessd is the Meshless node daemon: it serves the CNI plugin
// on a unix socket, opens its listeners inside every registered pod's
// netns and forwards the pods' connections.
//
//	meshlessd --node-name n1 --registry /etc/meshless/registry.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshless/meshless/daemon/app"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/daemon/meshletdir"
	"github.com/meshless/meshless/internal/wellknown"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err == nil {
		err = run(cfg)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "meshlessd:", err)
		os.Exit(1)
	}
}

// run runs the daemon until SIGTERM or SIGINT.
func run(cfg app.Config) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return app.Run(ctx, cfg)
}

// staggerFlag is --race-stagger: "auto" (the default) or a duration,
// which also turns off the races' learning (app.Config.RaceFixed).
type staggerFlag struct{ cfg *app.Config }

func (f staggerFlag) String() string {
	if f.cfg == nil || !f.cfg.RaceFixed {
		return "auto"
	}
	return f.cfg.RaceStagger.String()
}

func (f staggerFlag) Set(s string) error {
	if s == "auto" {
		f.cfg.RaceFixed, f.cfg.RaceStagger = false, 0
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want auto or a duration: %w", err)
	}
	f.cfg.RaceFixed, f.cfg.RaceStagger = true, d
	return nil
}

// parseFlags turns the command line into the daemon's configuration and
// sets up logging.
func parseFlags(args []string) (app.Config, error) {
	host, _ := os.Hostname()
	var (
		cfg       app.Config
		logLevel  string
		logJSON   bool
		excludeNS string
	)
	fs := flag.NewFlagSet("meshlessd", flag.ContinueOnError)
	fs.StringVar(&cfg.NodeName, "node-name", host, "this node's name in the registry or cluster")
	fs.StringVar(&cfg.Socket, "socket", wellknown.DaemonSocket, "unix socket the CNI plugin talks to")
	fs.StringVar(&cfg.StateDir, "state-dir", wellknown.StateDir, "folder of persisted pod registrations")
	fs.StringVar(&cfg.Registry, "registry", "", "YAML registry `file` (standalone discovery)")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig `file` (in-cluster when neither this nor --registry)")
	fs.StringVar(&cfg.TunnelAddr, "tunnel-addr", fmt.Sprintf(":%d", wellknown.TunnelPort), "address of the cross-node tunnel listener")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain of node and workload identities")
	fs.StringVar(&cfg.TLSDir, "tls-dir", "", "`folder` of this node's TLS material: ca.crt, tls.crt, tls.key (meshlessctl ca issue); re-read when it changes")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", fmt.Sprintf("127.0.0.1:%d", wellknown.AdminPort), "address of /healthz, /readyz, /metrics")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 0, "close forwarded connections idle this long (0: never)")
	fs.IntVar(&cfg.RaceFanout, "race-fanout", 0, "service endpoints dialled at once when racing (0: all)")
	fs.Var(staggerFlag{&cfg}, "race-stagger", "delay before each further endpoint of a race: auto (learned per endpoint, fastest first), or a fixed `duration` in random order (0: all at once)")
	fs.Var(&cfg.AccessPolicy, "access-policy", "Meshlet access control: enforce, audit (log and count what enforce would refuse) or off")
	fs.Var(&cfg.InboundPolicy, "inbound-policy", "connections into pods not through a daemon: permissive, or strict (only from the node's own addresses)")
	fs.StringVar(&cfg.MeshletDir, "meshlet-dir", meshletdir.Default, "host `path` of each pod's Meshless folder (its /meshlet), with placeholders {namespace}, {name}, {uid}; a path without them is a base folder")
	fs.BoolVar(&cfg.Sockmap, "sockmap", false, "forward TCP-to-TCP connections inside the kernel with a BPF sockmap instead of copying them (experimental; needs BPF)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof/ on --admin-addr (profiling; off by default)")
	fs.BoolVar(&cfg.EnrollExisting, "enroll-existing", true, "with Kubernetes discovery, enroll this node's running pods that are not in the mesh (started before meshless-cni was in the CNI chain)")
	fs.StringVar(&excludeNS, "exclude-namespaces", "kube-system", "comma-separated namespaces whose pods are never enrolled (as the plugin's excludeNamespaces; empty: none)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&logJSON, "log-json", false, "log JSON instead of text")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.Registry != "" && cfg.Kubeconfig != "" {
		return cfg, fmt.Errorf("--registry and --kubeconfig are exclusive")
	}
	cfg.ExcludeNamespaces = []string{}
	for _, n := range strings.Split(excludeNS, ",") {
		if n = strings.TrimSpace(n); n != "" {
			cfg.ExcludeNamespaces = append(cfg.ExcludeNamespaces, n)
		}
	}
	if cfg.RaceFanout < 0 || cfg.RaceStagger < 0 || cfg.IdleTimeout < 0 {
		return cfg, fmt.Errorf("--race-fanout, --race-stagger and --idle-timeout must not be negative")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(logLevel))); err != nil {
		return cfg, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if logJSON {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	cfg.Logger = slog.New(h)
	slog.SetDefault(cfg.Logger)
	return cfg, nil
}
