package mesh

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/internal/lab"
	"github.com/meshless/meshless/internal/testenv"
)

// The access-control world of testAccessControl: Meshlet "server" serves
// acl-local (n1/p2, the client's node) and acl-remote (n2/p2); the client
// n1/p3 is in no Meshlet, then in Meshlet "client" with one, then both
// declarations.
const (
	aclLocalVIP  = "198.18.100.31"
	aclRemoteVIP = "198.18.100.32"
)

// testAccessControl: for each policy case, the same answer same-node and
// cross-node, for the service's VIP and for the pod's own address; a
// refused connection is reset and counted where it is decided; a
// declaration withdrawn closes a live connection it allowed.
func (s *meshSuite) testAccessControl(t *testing.T) {
	l := s.l
	svc := func(name, vip string, refs ...string) lab.ServiceState {
		return lab.ServiceState{Name: name, VIP: vip, Port: 80, TargetPort: appPort, Endpoints: refs}
	}
	services := []lab.ServiceState{
		svc("race", raceVIP, "n2/p1", "n2/p2", "n2/p3"),
		svc("uds-local", udsLocalVIP, "n1/p2"),
		svc("uds-remote", udsRemoteVIP, "n2/p2"),
		svc("acl-local", aclLocalVIP, "n1/p2"),
		svc("acl-remote", aclRemoteVIP, "n2/p2"),
	}
	must(t, l.SetServices(services))
	t.Cleanup(func() {
		// The suite's other subtests run without policy.
		must(t, l.SetMeshlets(nil))
		must(t, l.SetPodLabels(s.client, nil))
		must(t, l.SetServices(services[:3]))
	})
	for _, ref := range []string{"n1/p2", "n2/p2"} {
		must(t, l.SetPodLabels(ref, map[string]string{meshlet.LabelMeshlet: "server"}))
	}
	server := meshlet.Meshlet{Namespace: "default", Name: "server", Spec: meshlet.Spec{Server: meshlet.Server{
		Services: []meshlet.Service{{Name: "acl-local"}, {Name: "acl-remote"}}}}}
	client := func(services ...string) meshlet.Meshlet {
		m := meshlet.Meshlet{Namespace: "default", Name: "client"}
		for _, sv := range services {
			m.Spec.Client = append(m.Spec.Client, meshlet.ClientRef{Meshlet: "server", Service: sv})
		}
		return m
	}
	steps := []struct {
		name          string
		member        bool
		declares      []string
		local, remote bool // allowed
	}{
		{"client in no Meshlet", false, nil, false, false},
		{"declares acl-local only", true, []string{"acl-local"}, true, false},
		{"declares both", true, []string{"acl-local", "acl-remote"}, true, true},
	}
	for _, st := range steps {
		var labels map[string]string
		if st.member {
			labels = map[string]string{meshlet.LabelMeshlet: "client"}
		}
		must(t, l.SetPodLabels(s.client, labels))
		must(t, l.SetMeshlets([]meshlet.Meshlet{server, client(st.declares...)}))
		waitServices(t, l, 6)
		t.Run(st.name, func(t *testing.T) {
			s.expectAccess(t, "same node", 1, aclLocalVIP, s.podAddr(t, "n1/p2"), st.local)
			s.expectAccess(t, "cross node", 2, aclRemoteVIP, s.podAddr(t, "n2/p2"), st.remote)
		})
	}
	t.Run("meshlessctl status shows identities and policy", s.testStatusPolicy)
	t.Run("withdrawn declaration closes live connections", s.testRevoke)
}

// testStatusPolicy runs meshlessctl status against n1's daemon: the
// client pod's identity, its Meshlet and what it may call, and the server
// pod with who may call it.
func (s *meshSuite) testStatusPolicy(t *testing.T) {
	bin, _ := bins(t)
	n1 := node(t, s.l, 1)
	// The registry's last change reaches n1 within its poll: ask until
	// the status shows it.
	var out []byte
	var text string
	status := func() {
		var err error
		out, err = exec.Command(filepath.Join(bin, "meshlessctl"), "status", "--socket", n1.Socket, "--admin-addr", "").CombinedOutput()
		if err != nil {
			t.Fatalf("meshlessctl status: %v\n%s", err, out)
		}
		// Compare whitespace-separated fields: the table's padding varies.
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
		text = strings.Join(lines, "\n")
	}
	client := "default/n1-p3 spiffe://cluster.local/ns/default/sa/default default/client - - default/server/acl-local,default/server/acl-remote"
	testenv.Eventually(t, 10*time.Second, func() error {
		if status(); !strings.Contains(text, client) {
			return fmt.Errorf("status lacks %q:\n%s", client, out)
		}
		return nil
	})
	for _, want := range []string{
		"identity: spiffe://cluster.local/meshless/node/n1",
		"access policy enforce",
		client,
		"default/n1-p2 spiffe://cluster.local/ns/default/sa/default default/server acl-local 0/-,acl-remote 0/- default/client -",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// expectAccess connects from the client to the VIP and to the pod address
// and checks both are allowed or both refused, a refusal counted as
// denied on node i (where the destination side decides).
func (s *meshSuite) expectAccess(t *testing.T, where string, i int, vip, podAddr string, allowed bool) {
	t.Helper()
	for _, dst := range []string{addr(mustAddr(vip), 80), podAddr} {
		denied := metric(t, s.l, i, `meshless_connection_failures_total{reason="denied"}`)
		// The registry change reaches both daemons within their poll: wait
		// for the expected answer, then require it to hold.
		testenv.Eventually(t, 10*time.Second, func() error {
			_, _, err := exchange(t, s.l, s.client, dst, 100, 1)
			if (err == nil) != allowed {
				return fmt.Errorf("%s %s: err %v, want allowed %v", where, dst, err, allowed)
			}
			return nil
		})
		if allowed {
			check(t, s.l, s.client, dst, s.cip, 1000)
			continue
		}
		if _, _, err := exchange(t, s.l, s.client, dst, 100, 2); err == nil {
			t.Fatalf("%s %s: allowed, want refused", where, dst)
		}
		if d := metric(t, s.l, i, `meshless_connection_failures_total{reason="denied"}`) - denied; d < 1 {
			t.Errorf("%s %s: node n%d counted %v denied, want at least 1", where, dst, i, d)
		}
		if i != 1 {
			// The source's daemon learns the reason from the far one.
			if d := metric(t, s.l, 1, `meshless_connection_failures_total{reason="denied"}`); d < 1 {
				t.Errorf("%s %s: the source's node counted no denial", where, dst)
			}
		}
	}
}

// testRevoke holds a connection to each service open, withdraws the
// client's declarations, and expects both to be reset.
func (s *meshSuite) testRevoke(t *testing.T) {
	var held []*net.TCPConn
	for _, vip := range []string{aclLocalVIP, aclRemoteVIP} {
		c, err := dialFrom(s.l, s.client, addr(mustAddr(vip), 80))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A byte each way proves the connection reached the app.
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	must(t, s.l.SetMeshlets([]meshlet.Meshlet{{Namespace: "default", Name: "server", Spec: meshlet.Spec{Server: meshlet.Server{
		Services: []meshlet.Service{{Name: "acl-local"}, {Name: "acl-remote"}}}}}, {Namespace: "default", Name: "client"}}))
	for i, c := range held {
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("connection %d still open 15 s after the declaration was withdrawn", i)
		}
	}
	for i := 1; i <= 2; i++ {
		if n := metric(t, s.l, i, `meshless_connection_failures_total{reason="revoked"}`); n < 1 {
			t.Errorf("node n%d counted %v revoked connections, want 1", i, n)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
