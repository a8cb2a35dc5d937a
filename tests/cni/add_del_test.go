package cni_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/meshless/meshless/tests/harness"
)

// TestChainLifecycle: for every supported cniVersion and backend, ADD
// through the real chain writes the rules and registers the pod, traffic
// between two pods still flows (now through the daemon), CHECK passes, and
// DEL twice leaves no rule and no registration.
func TestChainLifecycle(t *testing.T) {
	for _, v := range cniVersions {
		for _, mode := range []string{"iptables", "nftables", "auto"} {
			t.Run(v+"/"+mode, func(t *testing.T) {
				l := newLab(t, true)
				chain := l.chain(v, map[string]any{"redirect": mode})
				client, server := l.pod(), l.pod()
				before := rules(t, client.Netns)

				resC, err := chain.Add(client)
				if err != nil {
					t.Fatalf("ADD client: %v", err)
				}
				resS, err := chain.Add(server)
				if err != nil {
					t.Fatalf("ADD server: %v", err)
				}
				after := rules(t, client.Netns)
				if !hasMeshlessRules(after) {
					t.Fatalf("no meshless rules in pod netns after ADD:\n%s", after)
				}
				if mode == "nftables" && !strings.Contains(after, "nft: meta l4proto tcp redirect to :15001") {
					t.Errorf("redirect=nftables but no nftables rule:\n%s", after)
				}
				if mode == "iptables" && !strings.Contains(after, "MESHLESS_OUTPUT") {
					t.Errorf("redirect=iptables but no iptables chain:\n%s", after)
				}
				if !l.registered(client) || !l.registered(server) {
					t.Fatalf("pods not registered with the daemon")
				}
				if ls := listening(t, client.Netns); !strings.Contains(ls, "127.0.0.1:15001") || !strings.Contains(ls, ":15006") {
					t.Fatalf("daemon's listeners not open in the pod netns:\n%s", ls)
				}

				// An unmodified TCP exchange between the pods still works;
				// it now goes through the daemon.
				serverIP := podIP(t, resS)
				_ = podIP(t, resC)
				echo(t, server.Netns, client.Netns, serverIP+":8080")
				if got := l.daemon.Metric(`meshless_connections_total{direction="outbound",path="passthrough"}`); got < 1 {
					t.Errorf("outbound passthrough connections = %v, want >= 1: the traffic did not go through the daemon", got)
				}

				if err := chain.Check(client); err != nil {
					t.Errorf("CHECK: %v", err)
				}

				for i := 0; i < 2; i++ {
					if err := chain.Del(client); err != nil {
						t.Fatalf("DEL #%d: %v", i+1, err)
					}
				}
				if l.registered(client) {
					t.Errorf("client still registered after DEL")
				}
				if !l.registered(server) {
					t.Errorf("DEL of client removed the server's registration")
				}
				final := rules(t, client.Netns)
				if hasMeshlessRules(final) {
					t.Errorf("meshless rules left after DEL:\n%s", final)
				}
				if final != before {
					t.Errorf("DEL left the netns different from before ADD:\nbefore:\n%s\nafter:\n%s", before, final)
				}
			})
		}
	}
}

// echo runs a line echo server in serverNS and a client in clientNS and
// checks the reply, including a half-close: the client shuts its write side
// and still reads the answer.
func echo(t *testing.T, serverNS, clientNS, addr string) {
	t.Helper()
	var ln net.Listener
	err := ns.WithNetNSPath(serverNS, func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", "0.0.0.0:"+strings.Split(addr, ":")[1])
		return err
	})
	if err != nil {
		t.Fatalf("listen in server pod: %v", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				b, _ := io.ReadAll(c) // until the client's FIN
				c.Write([]byte("echo:" + string(b)))
			}(c)
		}
	}()
	var conn net.Conn
	err = ns.WithNetNSPath(clientNS, func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp4", addr, 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from client pod: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("half-close: %v", err)
	}
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != io.EOF && err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if got != "echo:hello" {
		t.Fatalf("reply = %q, want %q", got, "echo:hello")
	}
}

// TestAddWithoutPrevResult: meshless-cni alone in a list is a clear error.
func TestAddWithoutPrevResult(t *testing.T) {
	l := newLab(t, true)
	chain := harness.NewChain(t, l.bins, l.node, harness.ChainOptions{
		CNIVersion: "1.0.0",
		NoPrimary:  true,
		Meshless:   map[string]any{"daemonSocket": l.socket},
		StateDir:   l.dir,
	})
	_, err := chain.Add(l.pod())
	if code := harness.CNIErrorCode(err); code != 7 || !strings.Contains(err.Error(), "chained") {
		t.Fatalf("ADD without prevResult: code %d, err %v; want code 7 saying it must be chained", code, err)
	}
}
