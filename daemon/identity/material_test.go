package identity

import (
	"crypto/x509"
	"errors"
	"testing"
)

// TestNewMaterialRefuses: structural checks that need no clock.
func TestNewMaterialRefuses(t *testing.T) {
	clk := newClock()
	ca := mustCA(t, clk)
	good := signLeaf(t, ca, validSpec(clk, nodeURI("n1")))
	other := signLeaf(t, ca, validSpec(clk, nodeURI("n1")))
	leafOf := func(spec leafSpec) (*x509.Certificate, any) {
		c := signLeaf(t, ca, spec)
		return c.Leaf, c.PrivateKey
	}
	noClientAuth := validSpec(clk, nodeURI("n1"))
	noClientAuth.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	wl, wlKey := leafOf(validSpec(clk, "spiffe://cluster.local/ns/a/sa/b"))
	ncl, nclKey := leafOf(noClientAuth)
	tests := []struct {
		name   string
		bundle []*x509.Certificate
		chain  []*x509.Certificate
		key    any
		want   error // nil: any error
	}{
		{"key of another certificate", ca.Bundle(), []*x509.Certificate{good.Leaf}, other.PrivateKey, ErrKeyMismatch},
		{"workload certificate", ca.Bundle(), []*x509.Certificate{wl}, wlKey, ErrNotNode},
		{"no clientAuth", ca.Bundle(), []*x509.Certificate{ncl}, nclKey, ErrNotNode},
		{"empty bundle", nil, []*x509.Certificate{good.Leaf}, good.PrivateKey, nil},
		{"empty chain", ca.Bundle(), nil, good.PrivateKey, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewMaterial(tt.bundle, tt.chain, keyOfAny(tt.key))
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("NewMaterial error %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := NewMaterial(ca.Bundle(), []*x509.Certificate{good.Leaf}, keyOf(good)); err != nil {
		t.Fatalf("good material refused: %v", err)
	}
}

// TestParsePEM: what the decoders accept and refuse.
func TestParsePEM(t *testing.T) {
	clk := newClock()
	ca := mustCA(t, clk)
	two := append(encodeCertificates(ca.signer), encodeCertificates(mustCA(t, clk).signer)...)
	keyPEM, err := encodePrivateKey(ca.key)
	if err != nil {
		t.Fatal(err)
	}
	certTests := []struct {
		name string
		in   []byte
		n    int // 0: refused
	}{
		{"one", encodeCertificates(ca.signer), 1},
		{"two", two, 2},
		{"comments around", append(append([]byte("# roots\n"), two...), "trailer\n"...), 2},
		{"empty", nil, 0},
		{"not pem", []byte("hello"), 0},
		{"a key among certificates", append(encodeCertificates(ca.signer), keyPEM...), 0},
		{"broken DER", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0},
		{"too big", make([]byte, maxPEMFile+1), 0},
	}
	for _, tt := range certTests {
		certs, err := ParseCertificates(tt.in)
		if len(certs) != tt.n || (err == nil) != (tt.n > 0) {
			t.Errorf("ParseCertificates(%s) = %d certs, %v; want %d", tt.name, len(certs), err, tt.n)
		}
	}
	keyTests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"pkcs8", keyPEM, true},
		{"two keys", append(append([]byte(nil), keyPEM...), keyPEM...), false},
		{"certificate", encodeCertificates(ca.signer), false},
		{"empty", nil, false},
	}
	for _, tt := range keyTests {
		if _, err := ParsePrivateKey(tt.in); (err == nil) != tt.ok {
			t.Errorf("ParsePrivateKey(%s): %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}
