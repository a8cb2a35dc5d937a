package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
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
