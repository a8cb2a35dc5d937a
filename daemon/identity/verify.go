package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// nodeOf checks that leaf has the shape of a node certificate and returns
// its identity: exactly one SAN, a URI holding a node ID of td; not a CA;
// key usage fit for TLS. It checks neither time nor signature: that is
// verifyChain's job. The trust domain is checked before the path so that a
// certificate of a cluster we do not federate with reads as such, whatever
// its path says.
func nodeOf(leaf *x509.Certificate, td spiffeid.TrustDomain) (spiffeid.ID, string, error) {
	if len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		return spiffeid.ID{}, "", fmt.Errorf("want exactly one SAN, a URI; have %d URI, %d DNS, %d IP, %d email: %w",
			len(leaf.URIs), len(leaf.DNSNames), len(leaf.IPAddresses), len(leaf.EmailAddresses), ErrNotNode)
	}
	id, err := ParseID(leaf.URIs[0].String())
	if err != nil {
		return spiffeid.ID{}, "", fmt.Errorf("%w: %w", ErrNotNode, err)
	}
	if !id.MemberOf(td) {
		return id, "", fmt.Errorf("trust domain %s, want %s: %w", id.TrustDomain(), td, ErrTrustDomain)
	}
	node, err := NodeName(id)
	if err != nil {
		return id, "", fmt.Errorf("path %s: %w", id.Path(), ErrNotNode)
	}
	if leaf.IsCA || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return id, node, fmt.Errorf("a CA certificate: %w", ErrNotNode)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return id, node, fmt.Errorf("key usage lacks digitalSignature: %w", ErrNotNode)
	}
	return id, node, nil
}

// checkTimes refuses a chain of which one certificate is expired or not
// yet valid at now. x509's own check would report an expired intermediate
// as an unknown authority; checking here keeps the reason precise.
func checkTimes(chain []*x509.Certificate, now time.Time) error {
	for i, c := range chain {
		which := "certificate"
		if i > 0 {
			which = fmt.Sprintf("chain certificate %d (%s)", i, c.Subject.CommonName)
		}
		if now.Before(c.NotBefore) {
			return fmt.Errorf("%s not valid before %s (now %s): %w",
				which, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrExpired)
		}
		if now.After(c.NotAfter) {
			return fmt.Errorf("%s expired at %s (now %s): %w",
				which, c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrExpired)
		}
	}
	return nil
}

// verifyChain verifies that chain[0] chains to a root in roots through
// chain[1:], at now, for usage. Failures wrap ErrUntrusted, or ErrNotNode
// when only the extended key usage is wrong.
func verifyChain(chain []*x509.Certificate, roots *x509.CertPool, now time.Time, usage x509.ExtKeyUsage) error {
	opts := x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{usage},
	}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	if _, err := chain[0].Verify(opts); err != nil {
		if inv, ok := errors.AsType[x509.CertificateInvalidError](err); ok && inv.Reason == x509.IncompatibleUsage {
			return fmt.Errorf("%w: %w", ErrNotNode, err)
		}
		return fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	return nil
}

// peerCheck is what one side of a handshake knows to judge the other: its
// trust domain and current roots, the time, the usage the peer's
// certificate must allow, and, for a client, the node it dialed.
type peerCheck struct {
	td       spiffeid.TrustDomain
	roots    *x509.CertPool
	now      time.Time
	usage    x509.ExtKeyUsage
	expected string // "" on the server: any node of the trust domain
	// cache remembers chains whose signatures verified against roots,
	// which belong to generation gen; nil to verify every time.
	cache *verifyCache
	gen   uint64
}

// verify judges the peer's chain, leaf first, and returns its node. The
// order of the checks makes the reason the most telling one: shape and
// trust domain first (a foreign certificate is foreign, whoever signed
// it), time before signature (an expired certificate of our CA is
// expired, not untrusted), and the expected node last, so that only a
// certificate that is valid in every other way is a "wrong peer".
func (pc peerCheck) verify(chain []*x509.Certificate) (string, error) {
	if len(chain) == 0 {
		return "", ErrNoCertificate
	}
	_, node, err := nodeOf(chain[0], pc.td)
	if err != nil {
		return "", err
	}
	if err := checkTimes(chain, pc.now); err != nil {
		return "", err
	}
	if !pc.cache.verified(pc.gen, pc.usage, chain) {
		if err := verifyChain(chain, pc.roots, pc.now, pc.usage); err != nil {
			return "", err
		}
		pc.cache.add(pc.gen, pc.usage, chain)
	}
	if pc.expected != "" && node != pc.expected {
		return "", fmt.Errorf("peer is node %q, dialed node %q: %w", node, pc.expected, ErrWrongPeer)
	}
	return node, nil
}

// hasUsages reports whether c allows every usage in want (or any usage).
func hasUsages(c *x509.Certificate, want ...x509.ExtKeyUsage) bool {
	if slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return true
	}
	for _, u := range want {
		if !slices.Contains(c.ExtKeyUsage, u) {
			return false
		}
	}
	return true
}

// maxVerifyCache bounds the chains remembered: a few per peer node (its
// current and previous certificate, as client and as server). Beyond it
// the cache starts over, which costs one verification per peer.
const maxVerifyCache = 512

// verifyCache remembers which exact chains (by a hash of their DER)
// verified against the roots of one generation of material, for one
// usage. A node's peers present the same certificate for hours, on
// every new connection and every resumption, and the two ECDSA
// verifications of the chain are the largest cost of a resumed handshake
// on the receiving side. What is remembered is only the signatures'
// verdict: the shape, the validity period at the current time and the
// expected node are checked on every handshake, and the cache is emptied
// when the generation (and so possibly the roots) changes.
type verifyCache struct {
	mu   sync.Mutex
	gen  uint64
	seen map[verifyKey]struct{}
}

type verifyKey struct {
	usage x509.ExtKeyUsage
	sum   [sha256.Size]byte
}

func chainKey(usage x509.ExtKeyUsage, chain []*x509.Certificate) verifyKey {
	h := sha256.New()
	for _, c := range chain {
		// The length keeps the boundaries, so two chains never hash the
		// same bytes.
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	k := verifyKey{usage: usage}
	h.Sum(k.sum[:0])
	return k
}

// verified reports whether chain verified for usage in generation gen.
func (vc *verifyCache) verified(gen uint64, usage x509.ExtKeyUsage, chain []*x509.Certificate) bool {
	if vc == nil {
		return false
	}
	k := chainKey(usage, chain)
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if vc.gen != gen {
		return false
	}
	_, ok := vc.seen[k]
	return ok
}

// add records that chain verified for usage against generation gen.
func (vc *verifyCache) add(gen uint64, usage x509.ExtKeyUsage, chain []*x509.Certificate) {
	if vc == nil {
		return
	}
	k := chainKey(usage, chain)
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if vc.gen != gen || len(vc.seen) >= maxVerifyCache {
		vc.gen, vc.seen = gen, nil
	}
	if vc.seen == nil {
		vc.seen = make(map[verifyKey]struct{})
	}
	vc.seen[k] = struct{}{}
}
