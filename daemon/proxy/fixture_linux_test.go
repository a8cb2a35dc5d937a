package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshless/meshless/daemon/decide"
	"github.com/meshless/meshless/daemon/inpod"
	"github.com/meshless/meshless/daemon/meshletdir"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/podstore"
	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/daemon/tunnel"
	"github.com/meshless/meshless/internal/idtest"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/podtest"
)

// The test mesh, all in 198.18.0.0/15:
//
//	podA  198.18.220.2  client, on n1; veth to ext 198.18.220.1 (outside
//	                    the mesh); its outbound TCP to 198.18.0.0/15 and
//	                    inbound TCP to port 7000 are redirected
//	podB  198.18.221.2  server on n1 (same node as podA)
//	podC  198.18.222.2  server on n2
//	n3                  a node whose tunnel accepts and never answers
//
// Both daemons (Handlers with their own agents) run in the test's netns;
// their tunnels listen on loopback and speak mutual TLS with identities
// of one test CA (n3's too).
const (
	ipA, ipExt, ipB, ipC = "198.18.220.2", "198.18.220.1", "198.18.221.2", "198.18.222.2"
	ipHole               = "198.18.223.2"
	vipWeb               = "198.18.100.10" // B, C and the black hole
	vipLocal             = "198.18.100.11" // B only
	vipRemote            = "198.18.100.12" // C only
)

// node is one test daemon.
type node struct {
	name    string
	m       *metrics.Metrics
	agent   *inpod.Manager
	routes  *routes.Table
	h       *Handler
	tunnel  netip.AddrPort
	meshlet string
}

// options configure the test daemons: the handler's and the decider's
// configurations (each node fills in its own routes, pods, metrics and
// folders).
type options struct {
	proxy  Config
	decide decide.Config
}

type mesh struct {
	ca                    *idtest.CA
	model                 routes.Model
	podA, ext, podB, podC ns.NetNS
	n1, n2                *node
	// holeBytes counts bytes the black-hole tunnel received after a
	// header; holeConns its connections.
	holeConns, holeBytes atomic.Int64
}

// returnRouting is what the CNI plugin installs for transparent sources:
// replies of connections the daemon opened with the transparent mark go
// back to the daemon's socket on this host's lo.
//
// The app's replies need a route before the mark reroutes them: a pod has
// a default route, and so do the test's pods.
func returnRouting(t *testing.T, n ns.NetNS) {
	podtest.Run(t, n, "sh", "-c", "ip route show default | grep -q . || ip route add default dev eth0")
	podtest.Run(t, n, "iptables", "-w", "-t", "mangle", "-A", "OUTPUT", "-p", "tcp", "-m", "mark", "--mark", "0x10000/0x10000",
		"-j", "CONNMARK", "--save-mark", "--nfmask", "0x10000", "--ctmask", "0x10000")
	podtest.Run(t, n, "iptables", "-w", "-t", "mangle", "-A", "OUTPUT", "-p", "tcp", "-m", "connmark", "--mark", "0x10000/0x10000",
		"-j", "CONNMARK", "--restore-mark", "--nfmask", "0x10000", "--ctmask", "0x10000")
	podtest.Run(t, n, "ip", "rule", "add", "fwmark", "0x10000/0x10000", "lookup", "19788", "pref", "100")
	podtest.Run(t, n, "ip", "route", "add", "local", "default", "dev", "lo", "table", "19788")
}

func newMesh(t *testing.T, o options) *mesh {
	t.Helper()
	nstest.RequireRoot(t)
	ms := &mesh{podA: podtest.NewNS(t), ext: podtest.NewNS(t)}
	podtest.Veth(t, ms.podA, ipA+"/24", ms.ext, ipExt+"/24")
	podtest.Run(t, ms.podA, "iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-m", "mark", "!", "--mark", "0x4d4c/0xffff",
		"-d", "198.18.0.0/15", "-j", "REDIRECT", "--to-ports", "15001")
	podtest.Run(t, ms.podA, "iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "7000",
		"-j", "REDIRECT", "--to-ports", "15006")
	podtest.Run(t, ms.podA, "ip", "route", "add", "default", "via", ipExt)
	returnRouting(t, ms.podA)
	ms.podB = podtest.NewPod(t, ipB+"/24")
	returnRouting(t, ms.podB)
	ms.podC = podtest.NewPod(t, ipC+"/24")
	returnRouting(t, ms.podC)

	ms.ca = idtest.NewCA(t)
	holeLn, err := tls.Listen("tcp", "127.0.0.1:0", ms.ca.Source(t, "n3").ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holeLn.Close() })
	go ms.blackHole(holeLn)

	ms.n1 = ms.newNode(t, "n1", o)
	ms.n2 = ms.newNode(t, "n2", o)
	model := routes.Model{
		Nodes: []routes.Node{
			{Name: "n1", Tunnel: ms.n1.tunnel, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.220.0/24"), netip.MustParsePrefix("198.18.221.0/24")}},
			{Name: "n2", Tunnel: ms.n2.tunnel, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.222.0/24")}},
			{Name: "n3", Tunnel: netip.MustParseAddrPort(holeLn.Addr().String()), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.223.0/24")}},
		},
		Services: []routes.Service{
			svc("web", vipWeb, routes.Endpoint{IP: ap(ipB), Node: "n1"}, routes.Endpoint{IP: ap(ipC), Node: "n2"}, routes.Endpoint{IP: ap(ipHole), Node: "n3"}),
			svc("uds-local", vipLocal, routes.Endpoint{IP: ap(ipB), Node: "n1"}),
			svc("uds-remote", vipRemote, routes.Endpoint{IP: ap(ipC), Node: "n2"}),
		},
	}
	ms.model = model
	for _, n := range []*node{ms.n1, ms.n2} {
		if err := n.routes.Update(model); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for _, r := range []struct {
		n  *node
		id string
		ns ns.NetNS
		ip string
	}{{ms.n1, "a", ms.podA, ipA}, {ms.n1, "b", ms.podB, ipB}, {ms.n2, "c", ms.podC, ipC}} {
		if _, err := r.n.agent.Register(ctx, podtest.Pod(r.id, r.ns, r.ip)); err != nil {
			t.Fatal(err)
		}
	}
	return ms
}

// setModel gives both daemons m.
func (ms *mesh) setModel(t *testing.T, m routes.Model) {
	t.Helper()
	ms.model = m
	for _, n := range []*node{ms.n1, ms.n2} {
		if err := n.routes.Update(m); err != nil {
			t.Fatal(err)
		}
	}
}

func ap(s string) netip.Addr { return netip.MustParseAddr(s) }

func svc(name, vip string, eps ...routes.Endpoint) routes.Service {
	return routes.Service{Namespace: "default", Name: name, VIPs: []netip.Addr{ap(vip)},
		Ports: []routes.ServicePort{{Name: "http", Port: 80, TargetPort: 8080}}, Endpoints: eps}
}

func (ms *mesh) newNode(t *testing.T, name string, o options) *node {
	t.Helper()
	n := &node{name: name, m: metrics.New(), meshlet: t.TempDir()}
	store, err := podstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pods := &lazyPods{}
	n.routes = routes.NewTable(name)
	dc := o.decide
	layout, err := meshletdir.Parse(n.meshlet)
	if err != nil {
		t.Fatal(err)
	}
	dc.Pods, dc.Routes, dc.Meshlets = pods, n.routes, layout
	d, err := decide.New(dc)
	if err != nil {
		t.Fatal(err)
	}
	pc := o.proxy
	pc.Decider, pc.Metrics, pc.DialTimeout = d, n.m, 5*time.Second
	pc.Identity = ms.ca.Source(t, name)
	if !testing.Verbose() {
		pc.Logger = slog.New(slog.DiscardHandler)
	}
	if n.h, err = New(pc); err != nil {
		t.Fatal(err)
	}
	if n.agent, err = inpod.New(inpod.Config{Store: store, Handler: n.h, Metrics: n.m}); err != nil {
		t.Fatal(err)
	}
	pods.a = n.agent
	if err := n.agent.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.agent.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.tunnel = netip.MustParseAddrPort(ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.h.TunnelServer().Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return n
}

type lazyPods struct{ a *inpod.Manager }

func (p *lazyPods) PodByIP(ip netip.Addr) (*inpod.Pod, bool) { return p.a.PodByIP(ip) }

// blackHole is a tunnel server (node n3, mutual TLS) that reads headers
// and never answers: a candidate whose SYN-ACK (here: OK) never comes.
func (ms *mesh) blackHole(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		ms.holeConns.Add(1)
		go func() {
			defer c.Close()
			if _, err := tunnel.ReadHeader(c); err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, c)
			ms.holeBytes.Add(n)
		}()
	}
}

// server is an app: each connection reads until EOF, then answers
// "<peer IP> <sha256 of what it read>" and closes.
type server struct {
	peers chan string
	conns atomic.Int64
}

func serve(t *testing.T, ln net.Listener) *server {
	s := &server{peers: make(chan string, 256)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer c.Close()
				h := sha256.New()
				io.Copy(h, c)
				peer := "unix"
				if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
					peer = a.IP.String()
				}
				select {
				case s.peers <- peer:
				default:
				}
				fmt.Fprintf(c, "%s %x", peer, h.Sum(nil))
			}()
		}
	}()
	return s
}

// listenIn opens an app listener inside n.
func listenIn(t *testing.T, n ns.NetNS, addr string) *server {
	return serve(t, podtest.Listen(t, n, "tcp4", addr))
}

// listenUnix opens a pod's unix socket for name under meshlet.
func listenUnix(t *testing.T, meshlet, pod, name string) *server {
	dir := filepath.Join(meshlet, "default", pod, "server")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, ln)
}

// request connects from podA to addr, sends payload, half-closes, and
// returns the answer.
func request(from ns.NetNS, addr string, payload []byte) (string, error) {
	c, err := podtest.Dial(from, "tcp4", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		if _, werr = c.Write(payload); werr == nil {
			werr = c.CloseWrite()
		}
	})
	b, err := io.ReadAll(c)
	wg.Wait()
	if werr != nil {
		return "", werr
	}
	return string(b), err
}

// want checks an answer: the server saw peer and exactly payload.
func want(t *testing.T, got, peer string, payload []byte) {
	t.Helper()
	exp := fmt.Sprintf("%s %x", peer, sha256.Sum256(payload))
	if got != exp {
		t.Fatalf("answer %q, want %q", got, exp)
	}
}

func counter(t *testing.T, n *node, metric string, labels ...string) float64 {
	t.Helper()
	var c prometheus.Counter
	switch metric {
	case "connections":
		c = n.m.Connections.WithLabelValues(labels...)
	case "failures":
		c = n.m.Failures.WithLabelValues(labels...)
	case "race":
		c = n.m.Race.WithLabelValues(labels...)
	case "bytes":
		c = n.m.Bytes.WithLabelValues(labels...)
	default:
		t.Fatalf("unknown metric %s", strings.TrimSpace(metric))
	}
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}
