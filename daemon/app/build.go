package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/decide"
	"github.com/meshless/meshless/daemon/discovery"
	"github.com/meshless/meshless/daemon/enroll"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/daemon/inpod"
	"github.com/meshless/meshless/daemon/kube"
	"github.com/meshless/meshless/daemon/localapi"
	"github.com/meshless/meshless/daemon/meshletdir"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/podstore"
	"github.com/meshless/meshless/daemon/proxy"
	"github.com/meshless/meshless/daemon/relay"
	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/daemon/tunnel"
	"github.com/meshless/meshless/internal/wellknown"
)

// daemon is the daemon's parts, wired in datapath order: pods accept
// (inpod), the proxy classifies, decides (decide), connects and relays.
type daemon struct {
	cfg       Config
	log       *slog.Logger
	metrics   *metrics.Metrics
	table     *routes.Table
	nodeAddrs *decide.NodeAddrs
	sockmap   *relay.Sockmap
	decider   *decide.Decider
	identity  *identity.Source
	// certs asks the Kubernetes signer for the node's certificate (no
	// --tls-dir under Kubernetes discovery); nil otherwise.
	certs     *certclient.Client
	tunnel    *tunnel.Client
	proxy     *proxy.Handler
	pods      *inpod.Manager
	disc      *discovery.Watcher
	enroller  *enroll.Enroller
	status    *localapi.StatusSource
	adminAddr net.Addr
}

// build makes the parts; nothing listens yet.
func build(cfg Config) (*daemon, error) {
	if cfg.Registry != "" && cfg.Kubeconfig != "" {
		return nil, errors.New("--registry and --kubeconfig are exclusive")
	}
	if cfg.Socket == "" {
		cfg.Socket = wellknown.DaemonSocket
	}
	tunnelPort, err := portOf(cfg.TunnelAddr)
	if err != nil {
		return nil, fmt.Errorf("--tunnel-addr: %w", err)
	}
	d := &daemon{cfg: cfg, log: cfg.Logger, metrics: metrics.New(), table: routes.NewTable(cfg.NodeName)}
	if d.log == nil {
		d.log = slog.Default()
	}
	store, err := podstore.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if d.nodeAddrs, err = decide.NewNodeAddrs(); err != nil {
		return nil, fmt.Errorf("list node addresses: %w", err)
	}
	if d.identity, err = newIdentity(cfg, d.log); err != nil {
		return nil, err
	}
	if cfg.Registry == "" && cfg.TLSDir == "" {
		// A failing configuration is reported by discovery, which needs
		// the same; without it there is nothing to ask.
		if rc, err := kube.RESTConfig(cfg.Kubeconfig); err == nil {
			if d.certs, err = certclient.New(rc, d.identity, certclient.Options{Node: cfg.NodeName, Logger: d.log}); err != nil {
				return nil, fmt.Errorf("node certificate: %w", err)
			}
		}
	}
	d.tunnel = &tunnel.Client{TLS: d.identity.ClientConfig, OnDialError: func(n tunnel.Node, err error) {
		d.log.Debug("tunnel: a ready connection could not be made", "node", n.String(), "err", err)
	}}
	if cfg.Sockmap {
		if d.sockmap, err = relay.LoadSockmap(); err != nil {
			return nil, fmt.Errorf("--sockmap: %w", err)
		}
	}
	layout, err := meshletdir.Parse(cfg.MeshletDir)
	if err != nil {
		return nil, fmt.Errorf("--meshlet-dir: %w", err)
	}
	// The decider needs the pods and the pods need the proxy, which needs
	// the decider: the indirection breaks the cycle.
	pods := &podsRef{}
	dec, err := decide.New(decide.Config{
		Routes: d.table, Pods: pods, Meshlets: layout,
		InboundPolicy: cfg.InboundPolicy, NodeAddrs: d.nodeAddrs, IdleTimeout: cfg.IdleTimeout,
		AccessPolicy: cfg.AccessPolicy,
	})
	if err != nil {
		d.close()
		return nil, err
	}
	d.decider = dec
	if d.proxy, err = proxy.New(proxy.Config{
		Decider: dec, Metrics: d.metrics, Logger: d.log, Sockmap: d.sockmap,
		Identity: d.identity, Tunnel: d.tunnel,
		RaceFanout: cfg.RaceFanout, RaceStagger: cfg.RaceStagger, RaceFixed: cfg.RaceFixed,
	}); err != nil {
		d.close()
		return nil, err
	}
	if d.pods, err = inpod.New(inpod.Config{Store: store, Handler: d.proxy, Native: d.proxy, Meshlets: layout,
		Socket: cfg.Socket, Metrics: d.metrics, Logger: d.log}); err != nil {
		d.close()
		return nil, err
	}
	pods.m = d.pods
	if err := d.buildDiscovery(tunnelPort); err != nil {
		d.close()
		return nil, err
	}
	d.status = &localapi.StatusSource{
		Node: cfg.NodeName, InboundPolicy: cfg.InboundPolicy.String(), AccessPolicy: cfg.AccessPolicy.String(),
		TrustDomain: d.identity.TrustDomain().String(), Routes: d.table, Discovery: d.disc,
		Identity: d.identity, Pods: d.pods, Live: d.decider,
	}
	return d, nil
}

// buildDiscovery makes the routing table's source and, on Kubernetes, the
// enrollment of running pods it feeds.
func (d *daemon) buildDiscovery(tunnelPort uint16) error {
	var onPods func()
	if d.cfg.Registry == "" && d.cfg.EnrollExisting {
		// Set before the watcher runs, so the informer's calls see it.
		onPods = func() { d.enroller.Kick() }
	}
	d.disc = discovery.New(discovery.Config{
		Table: d.table, Registry: d.cfg.Registry, Kubeconfig: d.cfg.Kubeconfig,
		TunnelPort: tunnelPort, OnPods: onPods, OnUpdate: d.routesChanged, Logger: d.log,
	})
	if onPods == nil {
		return nil
	}
	var err error
	d.enroller, err = enroll.New(enroll.Config{
		NodeName:          d.cfg.NodeName,
		ExcludeNamespaces: d.cfg.ExcludeNamespaces,
		Pods:              func() ([]*corev1.Pod, bool) { return d.disc.PodsOnNode(d.cfg.NodeName) },
		Agent:             d.pods,
		Logger:            d.log,
	})
	return err
}

// newIdentity makes the node's TLS identity source, loaded from
// --tls-dir when given.
func newIdentity(cfg Config, log *slog.Logger) (*identity.Source, error) {
	o := identity.Options{Node: cfg.NodeName, Dir: cfg.TLSDir, Logger: log}
	if cfg.TrustDomain != "" {
		td, err := identity.ParseTrustDomain(cfg.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("--trust-domain: %w", err)
		}
		o.TrustDomain = td
	}
	src, err := identity.NewSource(o)
	if err != nil {
		return nil, fmt.Errorf("--tls-dir %s: %w", cfg.TLSDir, err)
	}
	return src, nil
}

// routesChanged follows a new routing table: live connections the new
// Meshlets no longer allow are closed, and tunnels to new nodes warmed.
func (d *daemon) routesChanged() {
	if n := d.decider.Revalidate(); n > 0 {
		d.log.Info("closed live connections the access policy no longer allows", "count", n)
	}
	d.prewarm()
}

// prewarm keeps ready tunnel connections to every other node of the
// routing table, so that the first connection to one does not wait for a
// TLS handshake either.
func (d *daemon) prewarm() {
	var nodes []tunnel.Node
	for _, n := range d.table.Snapshot().Model().Nodes {
		if n.Name != d.cfg.NodeName && n.Tunnel.IsValid() {
			nodes = append(nodes, tunnel.Node{Name: n.Name, Addr: n.Tunnel})
		}
	}
	d.tunnel.Prewarm(nodes)
}

// close releases what build made and phases opened: the pods' listeners
// (their state stays on disk) and the kernel program.
func (d *daemon) close() {
	if d.pods != nil {
		d.pods.Close()
	}
	if d.sockmap != nil {
		d.sockmap.Close()
	}
	if d.tunnel != nil {
		d.tunnel.Close()
	}
}

// portOf returns the port of a host:port address: the tunnel port of
// every node under Kubernetes discovery, which does not say it.
// wellknown.TunnelPort for an empty address (no tunnel listener here, the
// others use the default).
func portOf(addr string) (uint16, error) {
	if addr == "" {
		return wellknown.TunnelPort, nil
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid port %q", p)
	}
	if n == 0 {
		// Any free port (tests): the other nodes' is the default.
		return wellknown.TunnelPort, nil
	}
	return uint16(n), nil
}

// podsRef is decide.Pods through a manager set after the decider exists.
type podsRef struct{ m *inpod.Manager }

// PodByIP implements decide.Pods.
func (p *podsRef) PodByIP(ip netip.Addr) (*inpod.Pod, bool) { return p.m.PodByIP(ip) }
