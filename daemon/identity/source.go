package identity

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultPollInterval is how often Run looks at the TLS directory.
// Certificates are renewed hours before they expire, so seconds of delay
// cost nothing, and a stat of three files every few seconds is free.
const DefaultPollInterval = 5 * time.Second

// Options configure a Source.
type Options struct {
	// TrustDomain of this node and of every peer it accepts;
	// DefaultTrustDomain when zero.
	TrustDomain spiffeid.TrustDomain
	// Node is this node's name; when set, material for another node is
	// refused (a misplaced --tls-dir).
	Node string
	// Dir is the TLS directory (ca.crt, tls.crt, tls.key) to load and
	// watch; empty for material set only through Set.
	Dir string
	// PollInterval of Run; DefaultPollInterval when zero.
	PollInterval time.Duration
	// Now is the clock for validity checks, handshakes and renewal;
	// time.Now when nil. Tests pass a fake one.
	Now func() time.Time
	// Logger receives reloads and their failures; slog.Default when nil.
	Logger *slog.Logger
	// SessionCacheSize is how many TLS sessions ClientConfig's
	// connections keep for resumption (about one per peer node);
	// DefaultSessionCacheSize when zero, none (no resumption) when
	// negative.
	SessionCacheSize int
}

// Source holds a node's current TLS material and replaces it when the TLS
// directory changes or Set is called. It is safe for concurrent use; a
// handshake reads the material once, so it never mixes old and new.
type Source struct {
	td           spiffeid.TrustDomain
	node, dir    string
	pollInterval time.Duration
	now          func() time.Time
	log          *slog.Logger
	sessions     *sessionCache
	verified     verifyCache

	cur atomic.Pointer[current]

	mu      sync.Mutex // serializes Set, Reload and the poller's bookkeeping
	seen    stamps     // of the file set last tried
	pending stamps     // of a changed file set waiting to settle
	lastErr error
	warned  uint64 // generation last warned about being past its renewal time
}

// current is the material in use and its generation, which counts the
// swaps: sessions of an older generation are not resumed.
type current struct {
	m   *Material
	gen uint64
}

// NewSource makes a Source. With opts.Dir it loads the directory first
// and fails if the material there is missing or unusable; without, it
// starts empty (handshakes fail with ErrNoIdentity) until Set.
func NewSource(opts Options) (*Source, error) {
	s := &Source{
		td:           opts.TrustDomain,
		node:         opts.Node,
		dir:          opts.Dir,
		pollInterval: opts.PollInterval,
		now:          clockOrNow(opts.Now),
		log:          opts.Logger,
	}
	if s.td.IsZero() {
		s.td = spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)
	}
	if s.pollInterval <= 0 {
		s.pollInterval = DefaultPollInterval
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.sessions = newSessionCache(opts.SessionCacheSize)
	s.cur.Store(&current{})
	if s.dir != "" {
		if err := s.Reload(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// TrustDomain is the source's trust domain.
func (s *Source) TrustDomain() spiffeid.TrustDomain { return s.td }

// Material is the material in use, nil before the first.
func (s *Source) Material() *Material { return s.cur.Load().m }

// Generation counts the successful swaps of material; 0 before the first.
func (s *Source) Generation() uint64 { return s.cur.Load().gen }

// Set validates m (trust domain, node, validity at the source's clock, a
// chain that leads to m's own bundle) and makes it the material in use
// for every new handshake. Invalid material is refused and the current
// one kept. This is how a CSR client hands over a renewed certificate.
func (s *Source) Set(m *Material) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setLocked(m)
}

func (s *Source) setLocked(m *Material) error {
	if m == nil {
		return fmt.Errorf("set tls material: nil")
	}
	if err := m.validate(s.td, s.node, s.now()); err != nil {
		return fmt.Errorf("set tls material: %w", err)
	}
	old := s.cur.Load()
	s.cur.Store(&current{m: m, gen: old.gen + 1})
	s.log.Info("tls material in use", "id", m.ID().String(),
		"notAfter", m.NotAfter().UTC(), "renewAt", m.RenewAt().UTC(), "roots", len(m.bundle))
	return nil
}

// Reload reads the TLS directory now, whether or not it changed, and
// swaps the material in if it is valid. On error the last good material
// stays in use and Err reports the error until a load succeeds.
func (s *Source) Reload() error {
	if s.dir == "" {
		return fmt.Errorf("reload tls material: no directory")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Stamp before reading: a change during the read shows up as a new
	// stamp at the next poll, which reads again.
	s.seen = stampFiles(s.dir)
	return s.loadLocked()
}

func (s *Source) loadLocked() error {
	m, err := LoadMaterial(s.dir)
	if err == nil {
		err = s.setLocked(m)
	}
	s.lastErr = err
	return err
}

// Err is the error of the last load of the TLS directory, nil if it
// succeeded. The material in use is the last good one either way.
func (s *Source) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Poll reloads the TLS directory once a change of its three files (mtime,
// size or identity of a file, so that a Kubernetes Secret volume's
// symlink swap counts) has settled: the files differ from those last
// tried and are the same as at the previous Poll. Three files cannot be
// replaced at once, so loading at the first sight of a change could catch
// a new certificate with the old key and log a false alarm; waiting one
// poll costs seconds on a certificate renewed hours ahead. It reports
// whether it tried, and the load's error.
func (s *Source) Poll() (tried bool, err error) {
	if s.dir == "" {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := stampFiles(s.dir)
	if st.equal(s.seen) {
		return false, nil
	}
	if !st.equal(s.pending) {
		s.pending = st
		return false, nil
	}
	s.seen = st
	return true, s.loadLocked()
}

// Run polls (see Poll) the TLS directory every PollInterval until ctx is
// done,
// logging each failed reload once per change of the files (the last good
// material stays in use) and, once per certificate, that it is past its
// renewal time. Without a directory it only does the latter.
func (s *Source) Run(ctx context.Context) {
	t := time.NewTicker(s.pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if tried, err := s.Poll(); tried && err != nil {
			s.log.Error("tls material not reloaded; keeping the last good one", "dir", s.dir, "err", err)
		}
		s.warnRenewal()
	}
}

// warnRenewal logs once per generation that the certificate in use is
// past half its life: nothing renewed it (the CSR client failed, or a
// standalone operator has to run meshlessctl ca issue again).
func (s *Source) warnRenewal() {
	c := s.cur.Load()
	if c.m == nil || !s.now().After(c.m.RenewAt()) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.warned == c.gen {
		return
	}
	s.warned = c.gen
	s.log.Warn("node certificate past its renewal time", "id", c.m.ID().String(), "notAfter", c.m.NotAfter().UTC())
}

// RenewAt is when the certificate in use reaches half its life; zero
// without material.
func (s *Source) RenewAt() time.Time {
	if m := s.Material(); m != nil {
		return m.RenewAt()
	}
	return time.Time{}
}

// Expiry is when the certificate in use expires; zero without material.
func (s *Source) Expiry() time.Time {
	if m := s.Material(); m != nil {
		return m.NotAfter()
	}
	return time.Time{}
}

// NeedsRenewal reports whether there is no material or the certificate
// in use is past its renewal time, by the source's clock.
func (s *Source) NeedsRenewal() bool {
	m := s.Material()
	return m == nil || !s.now().Before(m.RenewAt())
}

// usable is the material for a handshake starting now, with its
// generation, or an error wrapping ErrNoIdentity: no certificate to
// present or roots to judge by is no reason to try.
func (s *Source) usable() (*current, error) {
	c := s.cur.Load()
	if c.m == nil {
		return nil, fmt.Errorf("%w: no tls material loaded", ErrNoIdentity)
	}
	if now := s.now(); now.After(c.m.NotAfter()) {
		return nil, fmt.Errorf("%w: own certificate %s expired at %s", ErrNoIdentity, c.m.ID(), c.m.NotAfter().UTC().Format(time.RFC3339))
	}
	return c, nil
}

// stamp is what Poll compares of one file: the file's identity (a rename
// or a symlink swap makes a new one), its mtime and its size.
type stamp struct {
	info os.FileInfo
	err  bool
}

// stamps are the stamps of ca.crt, tls.crt and tls.key.
type stamps [3]stamp

func stampFiles(dir string) stamps {
	var st stamps
	for i, name := range []string{CACertFile, TLSCertFile, TLSKeyFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		st[i] = stamp{info: fi, err: err != nil}
	}
	return st
}

// equal reports whether no file changed between a and b. A missing file
// equals a missing file, so a broken directory is reported once, not at
// every poll.
func (a stamps) equal(b stamps) bool {
	for i := range a {
		x, y := a[i], b[i]
		switch {
		case x.err || y.err:
			if x.err != y.err {
				return false
			}
		case x.info == nil || y.info == nil:
			return false
		case !os.SameFile(x.info, y.info) || !x.info.ModTime().Equal(y.info.ModTime()) || x.info.Size() != y.info.Size():
			return false
		}
	}
	return true
}
