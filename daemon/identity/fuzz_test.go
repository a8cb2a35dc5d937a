package identity

import (
	"strings"
	"testing"
	"time"
)

// The seed corpora live in testdata/fuzz/<name>, so `go test` replays
// them; `go test -fuzz FuzzParseID` explores from there.

// specID is the SPIFFE spec's ID grammar, written independently of
// go-spiffe, as the oracle of FuzzParseID: spiffe://, a trust domain of
// [a-z0-9.-_], then zero or more "/segment" with segments of
// [A-Za-z0-9.-_] that are not empty, "." or "..".
func specID(s string) bool {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok || len(s) > maxIDLen {
		return false
	}
	td, path, _ := strings.Cut(rest, "/")
	if td == "" || len(td) > maxTrustDomainLen || strings.Trim(td, "abcdefghijklmnopqrstuvwxyz0123456789.-_") != "" {
		return false
	}
	if !strings.Contains(rest, "/") {
		return true
	}
	for _, seg := range strings.Split(path, "/") {
		if seg == "" || seg == "." || seg == ".." ||
			strings.Trim(seg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != "" {
			return false
		}
	}
	return true
}

// FuzzParseID: ParseID agrees with the spec's grammar, round-trips, and
// NodeName/Workload invert NodeID/WorkloadID on whatever it accepts.
func FuzzParseID(f *testing.F) {
	f.Add("spiffe://cluster.local/meshless/node/n1")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if (err == nil) != specID(s) {
			t.Fatalf("ParseID(%q) error %v, spec says valid=%v", s, err, specID(s))
		}
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("round trip %q -> %q", s, id.String())
		}
		// As it travels in a certificate: a URL.
		if again, err := ParseID(id.URL().String()); err != nil || again != id {
			t.Fatalf("through a URL: %v, %v", again, err)
		}
		if _, err := ParseTrustDomain(id.TrustDomain().Name()); err != nil {
			t.Fatalf("trust domain of a valid ID refused: %v", err)
		}
		if node, err := NodeName(id); err == nil {
			if again, err := NodeID(id.TrustDomain(), node); err != nil || again != id {
				t.Fatalf("NodeID(NodeName(%s)) = %v, %v", id, again, err)
			}
		}
		if ns, sa, err := Workload(id); err == nil {
			if again, err := WorkloadID(id.TrustDomain(), ns, sa); err != nil || again != id {
				t.Fatalf("WorkloadID(Workload(%s)) = %v, %v", id, again, err)
			}
		}
	})
}

// FuzzParseMaterial: the PEM decoders never panic, and accepted material
// is a node certificate whose key matches.
func FuzzParseMaterial(f *testing.F) {
	f.Fuzz(func(t *testing.T, bundlePEM, chainPEM, keyPEM []byte) {
		m, err := ParseMaterial(bundlePEM, chainPEM, keyPEM)
		if err != nil {
			return
		}
		if m.Node() == "" || len(m.Bundle()) == 0 || len(m.Chain()) == 0 {
			t.Fatalf("accepted material without node, bundle or chain")
		}
		if again, err := NodeID(m.ID().TrustDomain(), m.Node()); err != nil || again != m.ID() {
			t.Fatalf("node %q does not give back %s", m.Node(), m.ID())
		}
	})
}

// FuzzSignNodeCSR: a signer fed any bytes as a PEM request never panics
// and signs only requests for exactly the caller's node ID.
func FuzzSignNodeCSR(f *testing.F) {
	clk := newClock()
	ca := mustCA(f, clk)
	opts := IssueOptions{Now: func() time.Time { return clk.Now() }}
	want, _ := NodeID(tdLocal, "n1")
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := ParseCSR(data)
		if err != nil {
			return
		}
		chain, err := ca.SignNodeCSR(csr, "n1", opts)
		if err != nil {
			return
		}
		leaf := chain[0]
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want.String() ||
			len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
			t.Fatalf("signed a certificate for %v %v %v %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
		}
	})
}
