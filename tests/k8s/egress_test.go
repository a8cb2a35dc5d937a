package k8s

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// egressProxy is the apiserver's "cluster" egress
// (--egress-selector-config-file): an HTTP CONNECT proxy in the test
// process, through which the apiserver dials what it resolves a Service
// to, webhooks included. No kube-proxy runs here, so nothing routes a
// ClusterIP; Route plays kube-proxy's part for one Service port, to a
// process on loopback (an EndpointSlice cannot point there: the
// apiserver refuses 127.0.0.0/8 endpoints). The apiserver then calls
// the webhook exactly as in a cluster: the Service of the
// MutatingWebhookConfiguration, TLS to its DNS name, its caBundle.
type egressProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	routes map[string]string // "ClusterIP:port" -> "127.0.0.1:port"
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// allowedEgress: what the proxy dials for a target no route names, as
// the apiserver itself would (kubelets of the node test): only loopback
// and the test range.
var allowedEgress = netip.MustParsePrefix("198.18.0.0/15")

// startEgressProxy listens on the unix socket path: the apiserver
// speaks HTTP CONNECT in the clear only there (over TCP it insists on
// TLS with a client certificate).
func startEgressProxy(t *testing.T, path string) *egressProxy {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &egressProxy{ln: ln, routes: map[string]string{}, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	return p
}

// config is the EgressSelectorConfiguration that sends the apiserver's
// cluster traffic through p.
func (p *egressProxy) config() string {
	return fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`, p.ln.Addr())
}

// Route sends the apiserver's connections to from (a Service's
// ClusterIP:port) to to.
func (c *Cluster) Route(from, to string) {
	c.egress.mu.Lock()
	defer c.egress.mu.Unlock()
	c.egress.routes[from] = to
}

func (p *egressProxy) serve() {
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[conn] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() {
			defer func() {
				p.mu.Lock()
				delete(p.conns, conn)
				p.mu.Unlock()
				conn.Close()
			}()
			p.tunnel(conn)
		})
	}
}

// tunnel answers one CONNECT and copies bytes both ways.
func (p *egressProxy) tunnel(conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	req, err := http.ReadRequest(bufio.NewReader(conn))
	if err != nil || req.Method != http.MethodConnect {
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	p.mu.Lock()
	target, routed := p.routes[req.Host]
	p.mu.Unlock()
	if !routed {
		ap, err := netip.ParseAddrPort(req.Host)
		if err != nil || !ap.Addr().IsLoopback() && !allowedEgress.Contains(ap.Addr()) {
			fmt.Fprintf(conn, "HTTP/1.1 403 Forbidden\r\n\r\n")
			return
		}
		target = req.Host
	}
	out, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		fmt.Fprintf(conn, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer out.Close()
	// The client speaks first (TLS), so the reader buffered nothing more.
	fmt.Fprintf(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, conn); _ = out.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, out); _ = conn.(*net.UnixConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

// close stops the proxy and its tunnels.
func (p *egressProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
