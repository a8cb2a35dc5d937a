// Package app wires the node daemon together: state store, agent, routing
// table fed by the registry file, forwarding handler, tunnel server, CNI
// socket and admin server. cmd/meshlessd only parses flags into a Config
// and calls Run.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshless/meshless/daemon/admin"
	"github.com/meshless/meshless/daemon/agent"
	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/cniserver"
	"github.com/meshless/meshless/daemon/enroll"
	"github.com/meshless/meshless/daemon/forward"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/podstore"
	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/daemon/sockmap"
)

// Config is the daemon's configuration, one field per meshlessd flag.
type Config struct {
	NodeName string
	// Socket is the CNI API unix socket.
	Socket string
	// StateDir holds the pod registrations.
	StateDir string
	// Registry is the YAML registry file, watched for changes. Kubeconfig
	// (Kubernetes discovery) is not implemented yet: Run refuses it.
	// Neither means no discovery: every connection is passthrough.
	Registry   string
	Kubeconfig string
	// TunnelAddr is where the cross-node tunnel listens; empty disables
	// it (this node then only sends tunnels).
	TunnelAddr string
	// AdminAddr serves /healthz, /readyz and /metrics.
	AdminAddr string
	// IdleTimeout closes forwarded connections idle that long; 0 never.
	IdleTimeout time.Duration
	// RaceFanout bounds the candidates of a race dialled at once; 0 all.
	RaceFanout int
	// RaceStagger delays each further candidate of a race; 0 none.
	RaceStagger time.Duration
	// InboundPolicy rules inbound connections that did not come through a
	// daemon.
	InboundPolicy forward.Policy
	// MeshletDir holds the pods' Meshless folders (unix sockets);
	// forward.DefaultMeshletDir when empty.
	MeshletDir string
	// Pprof serves /debug/pprof/ on the admin address.
	Pprof bool
	// Sockmap forwards TCP↔TCP connections inside the kernel (BPF
	// sockmap) instead of copying them in user space. Run fails when the
	// program cannot be loaded.
	Sockmap bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Handler overrides the forwarding connection handler (the tunnel
	// server still uses a forwarding handler).
	Handler agent.ConnHandler
	// Metrics overrides the daemon's metrics (the handler should use the
	// same); default metrics.New().
	Metrics *metrics.Metrics
	// EnrollExisting, with Kubernetes discovery, enrolls the pods of this
	// node that run without the mesh (started before meshless-cni was in
	// the CNI chain): see package enroll.
	EnrollExisting bool
	// ExcludeNamespaces are never enrolled; nil means kube-system (the
	// plugin's default excludeNamespaces), empty non-nil none.
	ExcludeNamespaces []string
	// Started, if set, is called once the daemon serves and is ready.
	Started func(*Daemon)
}

// Daemon is a running daemon, as seen by Config.Started.
type Daemon struct {
	Agent     *agent.Agent
	Metrics   *metrics.Metrics
	AdminAddr net.Addr
	// Routes is the routing table.
	Routes *routes.Table
	// TunnelAddr is the tunnel listener's address; nil when disabled.
	TunnelAddr net.Addr
}

// Run runs the daemon until ctx is cancelled. On return the listeners in
// pods are closed and the socket file removed; pod state stays on disk for
// the next start.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Socket == "" {
		cfg.Socket = cniapi.DefaultSocket
	}
	if cfg.Registry != "" && cfg.Kubeconfig != "" {
		return errors.New("--registry and --kubeconfig are exclusive")
	}
	m := cfg.Metrics
	if m == nil {
		m = metrics.New()
	}
	store, err := podstore.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	table := routes.NewTable(cfg.NodeName)
	nodeAddrs, err := forward.NewNodeAddrs()
	if err != nil {
		return fmt.Errorf("list node addresses: %w", err)
	}
	// The agent needs the handler and the handler the agent's pods: the
	// indirection breaks the cycle.
	pods := &podsRef{}
	var sm *sockmap.Map
	if cfg.Sockmap {
		if sm, err = sockmap.Load(); err != nil {
			return fmt.Errorf("--sockmap: %w", err)
		}
		defer sm.Close()
	}
	fw, err := forward.New(forward.Config{
		Pods: pods, Routes: table, Metrics: m, Logger: log,
		RaceFanout: cfg.RaceFanout, RaceStagger: cfg.RaceStagger,
		IdleTimeout: cfg.IdleTimeout, MeshletDir: cfg.MeshletDir,
		InboundPolicy: cfg.InboundPolicy, NodeAddrs: nodeAddrs, Sockmap: sm,
	})
	if err != nil {
		return err
	}
	var h agent.ConnHandler = fw
	if cfg.Handler != nil {
		h = cfg.Handler
	}
	ag, err := agent.New(agent.Config{Store: store, Handler: h, Socket: cfg.Socket, Metrics: m, Logger: log})
	if err != nil {
		return err
	}
	pods.a = ag
	defer ag.Close()
	disc := &discovery{table: table, source: "kubernetes (in-cluster)", log: log}
	switch {
	case cfg.Registry != "":
		disc.source = "registry " + cfg.Registry
	case cfg.Kubeconfig != "":
		disc.source = "kubernetes (" + cfg.Kubeconfig + ")"
	}

	// Admin first: /healthz answers while the state is restored, /readyz
	// says 503 until the CNI socket serves.
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen admin: %w", err)
	}
	var serving atomic.Bool
	ready := func() error {
		if err := ag.Ready(); err != nil {
			return err
		}
		if !serving.Load() {
			return errors.New("cni socket not serving yet")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	serve := func(name string, h func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h(); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	adminH := admin.NewHandler(ready, m.Registry)
	if cfg.Pprof {
		adminH = admin.WithPprof(adminH)
	}
	serve("admin", func() error { return cniserver.Serve(ctx, adminLn, adminH) })
	defer wg.Wait()
	wg.Go(func() { nodeAddrs.Run(ctx, 0, log) })

	// The first registry poll (or Kubernetes sync) completes before the
	// pods' listeners open, so the first connections already follow the
	// routes. Without --registry the source is Kubernetes: --kubeconfig,
	// else the in-cluster configuration.
	var en *enroll.Enroller
	if cfg.Registry == "" && cfg.EnrollExisting {
		en, err = enroll.New(enroll.Config{
			NodeName:          cfg.NodeName,
			ExcludeNamespaces: cfg.ExcludeNamespaces,
			Pods:              disc.podsOnNode(cfg.NodeName),
			Agent:             ag,
			Logger:            log,
		})
		if err != nil {
			cancel()
			return err
		}
		disc.onPods = en.Kick
	}
	first := make(chan struct{})
	if cfg.Registry != "" {
		serve("registry", func() error { return disc.watchRegistry(ctx, cfg.Registry, first) })
	} else {
		serve("kubernetes", func() error { return disc.watchKube(ctx, cfg.Kubeconfig, first) })
	}
	select {
	case <-first:
	case <-ctx.Done():
	}
	// The tunnel listener binds now (a wrong address fails the start) and
	// serves once the pods are restored; until then connections wait in
	// its backlog.
	var (
		tunnelAddr net.Addr
		tln        net.Listener
	)
	if cfg.TunnelAddr != "" {
		tln, err = net.Listen("tcp", cfg.TunnelAddr)
		if err != nil {
			cancel()
			return fmt.Errorf("listen tunnel: %w", err)
		}
		tunnelAddr = tln.Addr()
	}
	statusBase := cniapi.DaemonStatus{Node: cfg.NodeName, InboundPolicy: cfg.InboundPolicy.String()}
	if tunnelAddr != nil {
		statusBase.TunnelAddr = tunnelAddr.String()
	}

	// The socket serves during the restore too: the plugin gets 503 and
	// retries, rather than "no such file", which it would also retry but
	// cannot tell from a daemon that is not installed.
	sockLn, err := cniserver.Listen(cfg.Socket)
	if err != nil {
		cancel()
		if tln != nil {
			tln.Close()
		}
		return err
	}
	serve("cni socket", func() error {
		return cniserver.Serve(ctx, sockLn, withStatus(cniserver.NewHandler(ag, log), func() *cniapi.DaemonStatus {
			return disc.status(statusBase)
		}))
	})
	serving.Store(true)
	if err := ag.Start(ctx); err != nil {
		cancel()
		if tln != nil {
			tln.Close()
		}
		return fmt.Errorf("restore state: %w", err)
	}
	if tln != nil {
		srv := fw.TunnelServer()
		serve("tunnel", func() error { return srv.Serve(ctx, tln) })
	}
	if en != nil {
		// The agent restored its state: pods registered before are known,
		// so only those still without the mesh are enrolled.
		serve("enroll", func() error { return en.Run(ctx) })
		en.Kick()
	}
	log.Info("meshlessd ready", "node", cfg.NodeName, "socket", cfg.Socket, "admin", adminLn.Addr().String(),
		"state_dir", cfg.StateDir, "tunnel_addr", cfg.TunnelAddr, "registry", cfg.Registry,
		"inbound_policy", cfg.InboundPolicy.String(), "race_fanout", cfg.RaceFanout, "race_stagger", cfg.RaceStagger, "sockmap", cfg.Sockmap, "enroll_existing", en != nil)
	if cfg.Started != nil {
		cfg.Started(&Daemon{Agent: ag, Metrics: m, AdminAddr: adminLn.Addr(), Routes: table, TunnelAddr: tunnelAddr})
	}
	<-ctx.Done()
	log.Info("meshlessd stopping")
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// podsRef is forward.Pods through an agent set after the handler exists.
type podsRef struct{ a *agent.Agent }

// PodByIP implements forward.Pods.
func (p *podsRef) PodByIP(ip netip.Addr) (*agent.Pod, bool) { return p.a.PodByIP(ip) }
