// Package app runs the node daemon: it builds the parts (build.go) and
// starts them in explicit phases under one error group, so that the first
// real error stops the daemon and is what the user sees.
//
//	err := app.Run(ctx, app.Config{NodeName: "n1", Registry: "/etc/meshless/registry.yaml"})
//
// The phases, in order:
//
//  1. admin: /healthz answers, /readyz says 503 until the end of phase 4;
//  2. discovery: the routing table's source starts; the daemon waits for
//     its first model (or, on Kubernetes, at most discovery.KubeSyncWait),
//     so the first connections already follow the routes;
//  3. sockets: the tunnel listener binds (a wrong --tunnel-addr fails the
//     start) and the local API socket serves (the plugin gets 503 and
//     retries during the restore, rather than "no such file");
//  4. restore: the pods registered before get their listeners back;
//  5. serve: the tunnel accepts, pods already running are enrolled, and
//     the daemon is ready.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/meshless/meshless/daemon/admin"
	"github.com/meshless/meshless/daemon/decide"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/daemon/localapi"
)

// Config is the daemon's configuration, one field per meshlessd flag.
type Config struct {
	NodeName string
	// Socket is the local API unix socket.
	Socket string
	// StateDir holds the pod registrations.
	StateDir string
	// Registry is the YAML registry file, watched for changes. Without it
	// the source is the Kubernetes API: Kubeconfig, or the in-cluster
	// configuration when that is empty too.
	Registry   string
	Kubeconfig string
	// TunnelAddr is where the cross-node tunnel listens; empty disables
	// it (this node then only sends tunnels). Its port is also the port
	// of the other nodes' tunnels under Kubernetes discovery.
	TunnelAddr string
	// AdminAddr serves /healthz, /readyz and /metrics.
	AdminAddr string
	// TrustDomain is the SPIFFE trust domain of the node and workload
	// identities; identity.DefaultTrustDomain when empty.
	TrustDomain string
	// TLSDir holds this node's TLS material (ca.crt, tls.crt, tls.key:
	// meshlessctl ca issue), re-read when it changes. Without it, and
	// without Kubernetes to ask for a certificate, the node has no
	// identity: its tunnel does not listen and its cross-node connections
	// are refused (never sent in the clear).
	TLSDir string
	// IdleTimeout closes forwarded connections idle that long; 0 never.
	IdleTimeout time.Duration
	// RaceFanout bounds the candidates of a race dialled at once; 0 all.
	RaceFanout int
	// RaceStagger, with RaceFixed, delays each further candidate of a
	// race by that much (0: none, all at once up to RaceFanout).
	RaceStagger time.Duration
	// RaceFixed races the old way: candidates by priority then at random,
	// RaceStagger apart. Otherwise (the default) races learn connect
	// times and stalls and stagger adaptively (package race, History).
	RaceFixed bool
	// InboundPolicy rules inbound connections that did not come through a
	// daemon.
	InboundPolicy decide.Policy
	// AccessPolicy applies the Meshlets' client declarations: enforce
	// (the default), audit or off.
	AccessPolicy decide.AccessPolicy
	// MeshletDir says where the pods' Meshless folders (unix sockets)
	// are on the host: a meshletdir layout, meshletdir.Default when empty.
	MeshletDir string
	// Pprof serves /debug/pprof/ on the admin address.
	Pprof bool
	// Sockmap forwards TCP↔TCP connections inside the kernel (BPF
	// sockmap) instead of copying them in user space. Run fails when the
	// program cannot be loaded.
	Sockmap bool
	// EnrollExisting, with Kubernetes discovery, enrolls the pods of this
	// node that run without the mesh (started before meshless-cni was in
	// the CNI chain): see package enroll.
	EnrollExisting bool
	// ExcludeNamespaces are never enrolled; nil means kube-system (the
	// plugin's default excludeNamespaces), empty non-nil none.
	ExcludeNamespaces []string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Run runs the daemon until ctx is cancelled, or until a part of it fails:
// then it stops the rest and returns that failure. On return the listeners
// in pods are closed and the socket file removed; pod state stays on disk
// for the next start.
func Run(ctx context.Context, cfg Config) error {
	d, err := build(cfg)
	if err != nil {
		return err
	}
	defer d.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	// stop ends every phase and returns the first real error: a part that
	// failed, before err, which is often only its consequence.
	stop := func(err error) error {
		cancel()
		if gerr := g.Wait(); gerr != nil {
			return gerr
		}
		return err
	}
	var serving atomic.Bool
	if err := d.serveAdmin(gctx, g, &serving); err != nil {
		return stop(err)
	}
	g.Go(func() error { return d.disc.Run(gctx) })
	select {
	case <-d.disc.Ready():
	case <-gctx.Done():
		return stop(nil)
	}
	tln, err := d.openSockets(gctx, g)
	if err != nil {
		return stop(err)
	}
	serving.Store(true)
	if err := d.pods.Start(gctx); err != nil {
		if tln != nil {
			tln.Close()
		}
		return stop(fmt.Errorf("restore state: %w", err))
	}
	d.serve(gctx, g, tln)
	<-gctx.Done()
	d.log.Info("meshlessd stopping")
	return stop(nil)
}

// serveAdmin is phase 1: the admin endpoints. The daemon is ready once the
// pods are restored and the local API serves.
func (d *daemon) serveAdmin(ctx context.Context, g *errgroup.Group, serving *atomic.Bool) error {
	ln, err := net.Listen("tcp", d.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen admin: %w", err)
	}
	ready := func() error {
		if err := d.pods.Ready(); err != nil {
			return err
		}
		if !serving.Load() {
			return errors.New("local API socket not serving yet")
		}
		if d.certs != nil && d.identity.Material() == nil {
			return errors.New("no node certificate yet from the Kubernetes signer (is meshless-signer running? see docs/security.md)")
		}
		return nil
	}
	h := admin.NewHandler(ready, d.metrics.Registry)
	if d.cfg.Pprof {
		h = admin.WithPprof(h)
	}
	d.adminAddr = ln.Addr()
	g.Go(func() error { return named("admin", localapi.Serve(ctx, ln, h)) })
	g.Go(func() error { d.nodeAddrs.Run(ctx, 0, d.log); return nil })
	return nil
}

// openSockets is phase 3: the tunnel listener binds now and serves once
// the pods are restored (until then connections wait in its backlog); the
// local API serves at once.
func (d *daemon) openSockets(ctx context.Context, g *errgroup.Group) (net.Listener, error) {
	var tln net.Listener
	if d.cfg.TunnelAddr != "" && d.identity.Material() == nil && d.certs == nil {
		d.log.Warn("no TLS material: the cross-node tunnel does not listen and cross-node connections are refused; give --tls-dir (meshlessctl ca issue)")
	} else if d.cfg.TunnelAddr != "" {
		var err error
		if tln, err = net.Listen("tcp", d.cfg.TunnelAddr); err != nil {
			return nil, fmt.Errorf("listen tunnel: %w", err)
		}
		d.status.TunnelAddr = tln.Addr().String()
	}
	sock, err := localapi.Listen(d.cfg.Socket)
	if err != nil {
		if tln != nil {
			tln.Close()
		}
		return nil, err
	}
	h := localapi.NewHandler(localapi.Config{Pods: d.pods, Status: d.status, Logger: d.log})
	g.Go(func() error { return named("local API socket", localapi.Serve(ctx, sock, h)) })
	return tln, nil
}

// raceStagger describes the race setting for the log.
func raceStagger(cfg Config) string {
	if !cfg.RaceFixed {
		return "auto"
	}
	return cfg.RaceStagger.String()
}

// serve is phase 5: the tunnel accepts and running pods are enrolled.
func (d *daemon) serve(ctx context.Context, g *errgroup.Group, tln net.Listener) {
	if tln != nil {
		srv := d.proxy.TunnelServer()
		g.Go(func() error { return named("tunnel", srv.Serve(ctx, tln)) })
	}
	g.Go(func() error { d.identity.Run(ctx); return nil })
	if d.certs != nil {
		g.Go(func() error { return named("node certificate", d.certs.Run(ctx)) })
	}
	if d.enroller != nil {
		// The pods were restored: those registered before are known, so
		// only those still without the mesh are enrolled.
		g.Go(func() error { return named("enroll", d.enroller.Run(ctx)) })
		d.enroller.Kick()
	}
	d.log.Info("meshlessd ready", "node", d.cfg.NodeName, "socket", d.cfg.Socket, "admin", d.adminAddr.String(),
		"state_dir", d.cfg.StateDir, "tunnel_addr", d.status.TunnelAddr, "discovery", d.disc.Status().Source,
		"inbound_policy", d.cfg.InboundPolicy.String(), "race_fanout", d.cfg.RaceFanout, "race_stagger", raceStagger(d.cfg),
		"sockmap", d.cfg.Sockmap, "enroll_existing", d.enroller != nil, "identity", identityOf(d.identity))
}

// identityOf names the node's identity for the log, "none" without one.
func identityOf(s *identity.Source) string {
	if m := s.Material(); m != nil {
		return m.ID().String()
	}
	return "none"
}

// named prefixes a part's error with its name; nil stays nil.
func named(part string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", part, err)
}
