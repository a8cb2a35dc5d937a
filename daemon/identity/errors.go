package identity

import (
	"crypto/tls"
	"errors"
	"net"
)

// Refusals of a peer (or of new material). Every error the verification
// returns wraps exactly one of them, so errors.Is picks the case and
// Reason turns it into a metric label.
var (
	// ErrNoCertificate: the peer presented no certificate.
	ErrNoCertificate = errors.New("no peer certificate")
	// ErrUntrusted: the chain does not lead to a root of the current
	// trust bundle (another CA, a forged or broken chain).
	ErrUntrusted = errors.New("certificate not signed by a trusted CA")
	// ErrTrustDomain: the certificate names another trust domain.
	ErrTrustDomain = errors.New("certificate of another trust domain")
	// ErrExpired: the certificate is expired or not yet valid.
	ErrExpired = errors.New("certificate expired or not yet valid")
	// ErrWrongPeer: a valid node certificate, but of another node than
	// the one expected.
	ErrWrongPeer = errors.New("certificate of another node")
	// ErrNotNode: the certificate is not a node identity: a workload ID,
	// no or several URI SANs, DNS/IP/email SANs, a CA certificate, or
	// unfit key usages.
	ErrNotNode = errors.New("not a node identity")
	// ErrNoIdentity: this node has no usable certificate of its own
	// (none loaded yet, or the loaded one expired).
	ErrNoIdentity = errors.New("no usable node certificate")
)

// Refusals of SignNodeCSR, one per defect of a certificate request.
var (
	// ErrCSRSignature: the request is not signed by its own key.
	ErrCSRSignature = errors.New("csr: bad signature")
	// ErrCSRKeyType: the key is neither ECDSA P-256 nor Ed25519 (also
	// returned by CA.SignNode for such a key).
	ErrCSRKeyType = errors.New("csr: key type not allowed (want ECDSA P-256 or Ed25519)")
	// ErrCSRExtraSAN: the request asks for DNS, IP, email or more than
	// one URI SAN.
	ErrCSRExtraSAN = errors.New("csr: SANs other than the node's URI")
	// ErrCSRWrongSAN: the one URI SAN is missing or is not the node's ID.
	ErrCSRWrongSAN = errors.New("csr: URI SAN is not the node's identity")
)

// ErrKeyMismatch: a private key does not belong to its certificate.
var ErrKeyMismatch = errors.New("private key does not match the certificate")

// Metric labels returned by Reason (meshless_connection_failures_total
// {reason}). They are part of the interface: dashboards match them.
const (
	ReasonUntrusted   = "tls_untrusted"
	ReasonTrustDomain = "tls_trust_domain"
	ReasonExpired     = "tls_expired"
	ReasonWrongPeer   = "tls_wrong_peer"
	ReasonNotNode     = "tls_not_node"
	ReasonNoCert      = "tls_no_cert"
	// ReasonNoIdentity: this side had no usable certificate to offer.
	ReasonNoIdentity = "tls_no_identity"
	// ReasonPeerRefused: the other side refused our certificate (it sent
	// a certificate alert); its own counter has the precise reason.
	ReasonPeerRefused = "tls_peer_refused"
	// ReasonPlaintext: the bytes received were not TLS at all, such as a
	// version-1 plaintext tunnel header.
	ReasonPlaintext = "tls_plaintext"
	// ReasonHandshake: any other handshake failure (reset, timeout,
	// protocol error).
	ReasonHandshake = "tls_handshake"
)

// reasons maps each sentinel to its label, in the order Reason tests
// them (an error wraps only one, so the order only matters for odd
// errors.Join results).
var reasons = []struct {
	err   error
	label string
}{
	{ErrNoCertificate, ReasonNoCert},
	{ErrUntrusted, ReasonUntrusted},
	{ErrTrustDomain, ReasonTrustDomain},
	{ErrExpired, ReasonExpired},
	{ErrWrongPeer, ReasonWrongPeer},
	{ErrNotNode, ReasonNotNode},
	{ErrNoIdentity, ReasonNoIdentity},
}

// Reason returns a short metric label for a failed handshake or a failed
// first read on a fresh connection: one of the Reason* constants, or ""
// for a nil error. Errors it does not recognize are ReasonHandshake.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.label
		}
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return ReasonPlaintext
	}
	if isCertificateAlert(err) {
		return ReasonPeerRefused
	}
	return ReasonHandshake
}

// certificateAlerts are the alerts a peer sends when it refuses our
// certificate; crypto/tls sends bad_certificate for every VerifyConnection
// error and certificate_required for a missing client certificate.
var certificateAlerts = []tls.AlertError{42, 43, 44, 45, 46, 116}

// isCertificateAlert reports whether err is a received alert that refuses
// our certificate. crypto/tls reports received alerts as a *net.OpError
// with Op "remote error" around an unexported alert type, so the alert is
// recognized by its text, which AlertError shares.
func isCertificateAlert(err error) bool {
	op, ok := errors.AsType[*net.OpError](err)
	if !ok || op.Op != "remote error" || op.Err == nil {
		return false
	}
	msg := op.Err.Error()
	for _, a := range certificateAlerts {
		if msg == a.Error() {
			return true
		}
	}
	return false
}
