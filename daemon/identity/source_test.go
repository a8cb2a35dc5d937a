package identity

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestSourceRenewalTimes: RenewAt is half-way through the certificate's
// life, NeedsRenewal flips there by the fake clock, Expiry is NotAfter.
func TestSourceRenewalTimes(t *testing.T) {
	clk := newClock()
	ca := mustCA(t, clk)
	s, err := NewSource(Options{Node: "n1", Now: clk.Now, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if !s.NeedsRenewal() || !s.RenewAt().IsZero() || !s.Expiry().IsZero() {
		t.Fatal("an empty source must need renewal and have no times")
	}
	start := clk.Now()
	if err := s.Set(issue(t, ca, "n1", clk)); err != nil {
		t.Fatal(err)
	}
	// Backdated by a minute: validity is [start-1m, start+24h].
	wantRenew := start.Add(-backdate).Add((DefaultNodeTTL + backdate) / 2)
	if got := s.RenewAt(); !got.Equal(wantRenew) {
		t.Fatalf("RenewAt %s, want %s", got, wantRenew)
	}
	if got := s.Expiry(); !got.Equal(start.Add(DefaultNodeTTL)) {
		t.Fatalf("Expiry %s, want %s", got, start.Add(DefaultNodeTTL))
	}
	steps := []struct {
		to   time.Time
		want bool
	}{
		{start.Add(time.Hour), false},
		{wantRenew.Add(-time.Second), false},
		{wantRenew, true},
		{start.Add(20 * time.Hour), true},
	}
	for _, st := range steps {
		clk.Advance(st.to.Sub(clk.Now()))
		if got := s.NeedsRenewal(); got != st.want {
			t.Errorf("at %s: NeedsRenewal %v, want %v", st.to.Sub(start), got, st.want)
		}
	}
}

// TestSourceOwnExpiry: past NotAfter the source refuses to present its
// certificate (ErrNoIdentity) rather than let peers refuse it.
func TestSourceOwnExpiry(t *testing.T) {
	w := newWorld(t)
	w.clk.Advance(DefaultNodeTTL + time.Second)
	srv, _ := handshake(t, w.n1.ServerConfig(), w.n2.ClientConfig("n1"))
	if !errors.Is(srv.err, ErrNoIdentity) {
		t.Fatalf("server error %v, want ErrNoIdentity", srv.err)
	}
}

// TestSourceSetRefuses: Set validates and keeps the material in use.
func TestSourceSetRefuses(t *testing.T) {
	clk := newClock()
	ca, foreign := mustCA(t, clk), mustCA(t, clk)
	otherTD := spiffeid.RequireTrustDomainFromString("other.example")
	mat := func(ca *CA, node string, opts IssueOptions) *Material {
		opts.Now = pick(opts.Now == nil, clk.Now, opts.Now)
		m, err := ca.NewNodeMaterial(node, opts)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// A leaf of the foreign CA with the trusted CA's bundle.
	fm := mat(foreign, "n1", IssueOptions{})
	mixed, err := NewMaterial(ca.Bundle(), fm.Chain(), keyOf(fm.cert))
	if err != nil {
		t.Fatal(err)
	}
	past := func() time.Time { return clk.Now().Add(-48 * time.Hour) }
	tests := []struct {
		name string
		m    *Material
		want error
	}{
		{"another node", mat(ca, "n2", IssueOptions{}), ErrWrongPeer},
		{"another trust domain", mat(ca, "n1", IssueOptions{TrustDomain: otherTD}), ErrTrustDomain},
		{"expired", mat(ca, "n1", IssueOptions{Now: past}), ErrExpired},
		{"not signed by its bundle", mixed, ErrUntrusted},
	}
	s := newTestSource(t, ca, "n1", clk)
	good := s.Material()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Set(tt.m)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Set error %v, want %v", err, tt.want)
			}
			if s.Material() != good || s.Generation() != 1 {
				t.Fatal("refused material replaced the good one")
			}
		})
	}
}

// writeDir issues n's material into dir with ca at clk's time.
func writeDir(t *testing.T, ca *CA, node, dir string, clk *fakeClock) *Material {
	t.Helper()
	m := issue(t, ca, node, clk)
	if err := WriteMaterial(dir, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSourceReloadKeepsLastGood: every kind of bad file set is refused
// with its error, the last good material stays in use, and a good set
// afterwards is taken.
func TestSourceReloadKeepsLastGood(t *testing.T) {
	clk := newClock()
	ca, foreign := mustCA(t, clk), mustCA(t, clk)
	tests := []struct {
		name  string
		spoil func(t *testing.T, dir string)
		want  error // nil: any error
	}{
		{"mismatched key", func(t *testing.T, dir string) {
			other := issue(t, ca, "n1", clk)
			pemKey, _ := encodePrivateKey(keyOf(other.cert))
			writeFileAtomic(filepath.Join(dir, TLSKeyFile), pemKey, keyMode)
		}, ErrKeyMismatch},
		{"expired certificate", func(t *testing.T, dir string) {
			old := &fakeClock{t: clk.Now().Add(-48 * time.Hour)}
			writeDir(t, ca, "n1", dir, old)
		}, ErrExpired},
		{"unparsable certificate", func(t *testing.T, dir string) {
			writeFileAtomic(filepath.Join(dir, TLSCertFile), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), certMode)
		}, nil},
		{"empty key file", func(t *testing.T, dir string) {
			writeFileAtomic(filepath.Join(dir, TLSKeyFile), nil, keyMode)
		}, nil},
		{"missing bundle", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, CACertFile))
		}, fs.ErrNotExist},
		{"bundle of another CA", func(t *testing.T, dir string) {
			writeFileAtomic(filepath.Join(dir, CACertFile), encodeCertificates(foreign.Bundle()...), certMode)
		}, ErrUntrusted},
		{"another node's material", func(t *testing.T, dir string) {
			writeDir(t, ca, "n2", dir, clk)
		}, ErrWrongPeer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			first := writeDir(t, ca, "n1", dir, clk)
			s, err := NewSource(Options{Node: "n1", Dir: dir, Now: clk.Now, Logger: discardLogger()})
			if err != nil {
				t.Fatal(err)
			}
			tt.spoil(t, dir)
			tried, err := settledPoll(s)
			if !tried || err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Poll = %v, %v; want a try failing with %v", tried, err, tt.want)
			}
			if !s.Material().Leaf().Equal(first.Leaf()) {
				t.Fatal("the last good material was dropped")
			}
			if s.Err() == nil {
				t.Fatal("Err() is nil after a failed load")
			}
			if tried, _ := s.Poll(); tried {
				t.Fatal("polled again without a change")
			}
			second := writeDir(t, ca, "n1", dir, clk)
			if tried, err := settledPoll(s); !tried || err != nil {
				t.Fatalf("Poll after repair = %v, %v", tried, err)
			}
			if !s.Material().Leaf().Equal(second.Leaf()) || s.Err() != nil || s.Generation() != 2 {
				t.Fatalf("repaired material not in use (generation %d, err %v)", s.Generation(), s.Err())
			}
		})
	}
}

// settledPoll is Poll twice: once to see a change, once to load it.
func settledPoll(s *Source) (bool, error) {
	if tried, err := s.Poll(); tried {
		return tried, err
	}
	return s.Poll()
}

// TestPollWaitsForSettledFiles: a change is loaded at the poll after the
// one that saw it, and only if nothing moved in between.
func TestPollWaitsForSettledFiles(t *testing.T) {
	clk := newClock()
	ca := mustCA(t, clk)
	dir := t.TempDir()
	writeDir(t, ca, "n1", dir, clk)
	s, err := NewSource(Options{Node: "n1", Dir: dir, Now: clk.Now, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	// A writer caught half-way: the new certificate with the old key.
	next := issue(t, ca, "n1", clk)
	writeFileAtomic(filepath.Join(dir, TLSCertFile), encodeCertificates(next.Leaf()), certMode)
	if tried, _ := s.Poll(); tried {
		t.Fatal("loaded at the first sight of a change")
	}
	keyPEM, _ := encodePrivateKey(keyOf(next.cert))
	writeFileAtomic(filepath.Join(dir, TLSKeyFile), keyPEM, keyMode)
	if tried, _ := s.Poll(); tried {
		t.Fatal("loaded while the files were still changing")
	}
	if tried, err := s.Poll(); !tried || err != nil {
		t.Fatalf("Poll on settled files = %v, %v", tried, err)
	}
	if !s.Material().Leaf().Equal(next.Leaf()) || s.Generation() != 2 {
		t.Fatal("settled material not in use")
	}
}

// TestNewSourceFailsOnBadDir: a daemon started on a broken --tls-dir
// says so instead of running without identity.
func TestNewSourceFailsOnBadDir(t *testing.T) {
	_, err := NewSource(Options{Dir: filepath.Join(t.TempDir(), "none"), Logger: discardLogger()})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error %v, want ErrNotExist", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test together.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventually polls cond every millisecond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSourceRunPicksUpChanges: Run notices new files by itself, logs a
// bad set once, warns once past the renewal time, and a handshake after
// the swap presents the new certificate.
func TestSourceRunPicksUpChanges(t *testing.T) {
	clk := newClock()
	ca := mustCA(t, clk)
	dir := t.TempDir()
	writeDir(t, ca, "n1", dir, clk)
	var logs syncBuffer
	s, err := NewSource(Options{Node: "n1", Dir: dir, Now: clk.Now, PollInterval: 2 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	peer := newTestSource(t, ca, "n2", clk)
	second := writeDir(t, ca, "n1", dir, clk)
	eventually(t, "the new material", func() bool { return s.Material().Leaf().Equal(second.Leaf()) })
	_, cli := mustHandshake(t, s.ServerConfig(), peer.ClientConfig("n1"))
	if !cli.state.PeerCertificates[0].Equal(second.Leaf()) {
		t.Fatal("handshake after the swap did not present the new certificate")
	}

	// The poller may have caught the writer half-way and logged it;
	// count from here.
	before := len(logs.String())
	writeFileAtomic(filepath.Join(dir, TLSCertFile), []byte("garbage"), certMode)
	since := func() string { return logs.String()[before:] }
	eventually(t, "the error log", func() bool { return strings.Contains(since(), "keeping the last good one") })
	clk.Advance(13 * time.Hour)
	eventually(t, "the renewal warning", func() bool { return strings.Contains(since(), "past its renewal time") })
	// The warning came from a later poll than the error, which that
	// poll did not log again.
	if !s.Material().Leaf().Equal(second.Leaf()) {
		t.Fatal("a bad set replaced the good material")
	}
	if n := strings.Count(since(), "keeping the last good one"); n != 1 {
		t.Errorf("bad set logged %d times, want once", n)
	}
	if n := strings.Count(since(), "past its renewal time"); n != 1 {
		t.Errorf("renewal warning logged %d times, want once", n)
	}
}

// TestPollSecretVolumeSwap: a Kubernetes Secret volume updates by
// pointing its ..data symlink at a new directory; the names Poll looks at
// are symlinks through ..data and never change themselves, but Poll stats
// through them and sees the new files behind.
func TestPollSecretVolumeSwap(t *testing.T) {
	clk := newClock()
	ca := mustCA(t, clk)
	dir := t.TempDir()
	writeDir(t, ca, "n1", filepath.Join(dir, "..v1"), clk)
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CACertFile, TLSCertFile, TLSKeyFile} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := NewSource(Options{Node: "n1", Dir: dir, Now: clk.Now, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	next := writeDir(t, ca, "n1", filepath.Join(dir, "..v2"), clk)
	// Atomic swap as kubelet does it: a new symlink renamed over the old.
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if tried, err := settledPoll(s); !tried || err != nil {
		t.Fatalf("Poll after the swap = %v, %v", tried, err)
	}
	if !s.Material().Leaf().Equal(next.Leaf()) {
		t.Fatal("swapped material not in use")
	}
}
