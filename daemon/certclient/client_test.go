package certclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/internal/testenv"
)

// harness is a Client over a fakeAPI, with a fake clock shared by the
// client, the Source and the fake's CA.
type harness struct {
	clock *clocktesting.FakeClock
	ca    *identity.CA
	api   *fakeAPI
	src   *identity.Source
	c     *Client
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	h := &harness{clock: clocktesting.NewFakeClock(time.Now())}
	quiet := slog.New(slog.DiscardHandler)
	var err error
	if h.ca, err = identity.NewCA(identity.CAOptions{Now: h.clock.Now}); err != nil {
		t.Fatal(err)
	}
	h.api = newFakeAPI(h.ca, "n1", identity.IssueOptions{Now: h.clock.Now})
	if h.src, err = identity.NewSource(identity.Options{Node: "n1", Now: h.clock.Now, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	opts.Node, opts.Clock, opts.Logger = "n1", h.clock, quiet
	if h.c, err = newClient(h.api, h.src, opts); err != nil {
		t.Fatal(err)
	}
	return h
}

// run runs the client until the test ends and waits for its first
// certificate.
func (h *harness) run(t *testing.T) *identity.Material {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-h.c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	return h.src.Material()
}

// waiting waits until the client sleeps on the fake clock with n CSRs
// made.
func (h *harness) waiting(t *testing.T, n int) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if created, _ := h.api.counts(); created != n || !h.clock.HasWaiters() {
			return fmt.Errorf("%d csrs made (want %d), waiting %v", created, n, h.clock.HasWaiters())
		}
		return nil
	})
}

func (h *harness) generation(t *testing.T, gen uint64) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if g := h.src.Generation(); g != gen {
			return fmt.Errorf("generation %d, want %d", g, gen)
		}
		return nil
	})
}

func TestRunRequestsAndRenewsAtHalfLife(t *testing.T) {
	h := newHarness(t, Options{})
	m1 := h.run(t)
	if m1.Node() != "n1" || h.src.Generation() != 1 {
		t.Fatalf("material for %q, generation %d", m1.Node(), h.src.Generation())
	}
	if created, deleted := h.api.counts(); created != 1 || deleted != 1 {
		t.Fatalf("%d csrs created, %d deleted; want 1, 1", created, deleted)
	}
	csr := h.api.created[0]
	if csr.GenerateName != "meshless-node-n1-" || csr.Spec.SignerName != SignerName ||
		*csr.Spec.ExpirationSeconds != DefaultExpirationSeconds || !slices.Equal(csr.Spec.Usages, Usages()) {
		t.Errorf("csr %s %+v", csr.GenerateName, csr.Spec)
	}
	req, err := identity.ParseCSR(csr.Spec.Request)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := req.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() || req.URIs[0].String() != m1.ID().String() {
		t.Errorf("request: key %T, SAN %v", req.PublicKey, req.URIs)
	}

	// Just before half life nothing happens; at half life a new
	// certificate replaces the first.
	h.waiting(t, 1)
	h.clock.SetTime(m1.RenewAt().Add(-time.Second))
	if !h.clock.HasWaiters() {
		t.Fatal("renewed before half life")
	}
	h.clock.SetTime(m1.RenewAt())
	h.generation(t, 2)
	m2 := h.src.Material()
	if m2.Leaf().SerialNumber.Cmp(m1.Leaf().SerialNumber) == 0 || !m2.RenewAt().After(m1.RenewAt()) {
		t.Errorf("renewed material: serial %v, renewAt %v", m2.Leaf().SerialNumber, m2.RenewAt())
	}
	if err := h.api.pending(); err != nil {
		t.Error(err)
	}
}

func TestRunBacksOffAndKeepsMaterial(t *testing.T) {
	h := newHarness(t, Options{RetryMax: 3 * time.Second})
	m1 := h.run(t)
	h.waiting(t, 1)
	h.api.set(func(f *fakeAPI) { f.deny = "Nope" })
	h.clock.SetTime(m1.RenewAt())
	// Backoff 1 s, 2 s, then RetryMax (3 s) again and again.
	for i, backoff := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
		h.waiting(t, 2+i)
		if h.src.Material() != m1 {
			t.Fatal("material replaced after a failed renewal")
		}
		h.clock.Step(backoff - time.Millisecond)
		if !h.clock.HasWaiters() {
			t.Fatalf("retry %d before its backoff of %v", i+1, backoff)
		}
		h.clock.Step(time.Millisecond)
	}
	h.waiting(t, 6)
	h.api.set(func(f *fakeAPI) { f.deny = "" })
	h.clock.Step(3 * time.Second)
	h.generation(t, 2)
	if err := h.api.pending(); err != nil {
		t.Error(err)
	}
}

func TestRequestDenied(t *testing.T) {
	h := newHarness(t, Options{})
	h.api.set(func(f *fakeAPI) { f.deny = "NotPodBoundToken" })
	_, err := h.c.Request(context.Background())
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("Request = %v, want ErrDenied", err)
	}
	for _, s := range []string{"meshless-node-n1-1", "denied", "NotPodBoundToken", "the fake says no"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
	if err := h.api.pending(); err != nil {
		t.Error(err)
	}
}

func TestRequestTimeout(t *testing.T) {
	h := newHarness(t, Options{})
	h.api.set(func(f *fakeAPI) { f.hang = true })
	errc := make(chan error, 1)
	go func() {
		_, err := h.c.Request(context.Background())
		errc <- err
	}()
	h.waiting(t, 1)
	h.clock.Step(DefaultTimeout)
	err := <-errc
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "meshless-node-n1-1 still pending after 30s") {
		t.Fatalf("Request = %v, want ErrTimeout naming the csr", err)
	}
	if err := h.api.pending(); err != nil {
		t.Error(err)
	}
}

// TestBundleRotation: a bundle with a second root is paired with the
// certificate in use at once; a bundle without the certificate's root
// makes the client renew at once, not at half life.
func TestBundleRotation(t *testing.T) {
	h := newHarness(t, Options{})
	m1 := h.run(t)
	testenv.Eventually(t, 10*time.Second, func() error {
		h.api.mu.Lock()
		defer h.api.mu.Unlock()
		if len(h.api.bundleW) == 0 {
			return errors.New("bundle not watched yet")
		}
		return nil
	})
	newCA, err := identity.NewCA(identity.CAOptions{Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	h.api.setBundle(append(h.ca.Bundle(), newCA.Bundle()...))
	h.generation(t, 2)
	if m := h.src.Material(); len(m.Bundle()) != 2 || !m.Leaf().Equal(m1.Leaf()) {
		t.Fatalf("after the new bundle: %d roots, same leaf %v", len(m.Bundle()), m.Leaf().Equal(m1.Leaf()))
	}
	if created, _ := h.api.counts(); created != 1 {
		t.Fatalf("%d csrs for a bundle that still trusts the certificate, want none", created-1)
	}

	h.api.set(func(f *fakeAPI) { f.ca = newCA })
	h.api.setBundle(newCA.Bundle())
	h.generation(t, 3)
	m := h.src.Material()
	if err := m.Leaf().CheckSignatureFrom(newCA.Certificate()); err != nil || len(m.Bundle()) != 1 {
		t.Fatalf("after dropping the old root: leaf of the new CA: %v; %d roots", err, len(m.Bundle()))
	}
}

func TestNewValidates(t *testing.T) {
	src, err := identity.NewSource(identity.Options{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: "https://198.18.0.1:6443"}
	for name, f := range map[string]func() error{
		"no config": func() error { _, err := New(nil, src, Options{Node: "n1"}); return err },
		"no source": func() error { _, err := New(cfg, nil, Options{Node: "n1"}); return err },
		"no node":   func() error { _, err := New(cfg, src, Options{}); return err },
	} {
		if f() == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	if _, err := New(cfg, src, Options{Node: "n1"}); err != nil {
		t.Fatalf("New: %v", err)
	}
}

// TestNoClientset keeps the package off client-go's generated clientset,
// whose init registers every API group: linked into meshlessd it would
// triple the binary and its memory on every node (see api.go).
func TestNoClientset(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		testenv.Missing(t, "the go command")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "k8s.io/client-go/kubernetes" || strings.HasPrefix(dep, "k8s.io/client-go/kubernetes/") ||
			strings.HasPrefix(dep, "k8s.io/client-go/informers") {
			t.Errorf("certclient depends on %s", dep)
		}
	}
}
