package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ServerConfig is the TLS configuration of the tunnel's server side. Every
// handshake, resumed ones included, presents the current certificate and
// judges the client's against the current bundle and trust domain, so a
// rotation applies to the next handshake without a restart. TLS 1.3 only;
// the client must present a node certificate (any node of the trust
// domain: which pods a node may speak for is the receiver's business,
// after the handshake, with PeerNode).
//
// The client certificate is requested rather than required, and judged in
// VerifyConnection, so that a missing one is refused with ErrNoCertificate
// like every other refusal instead of a bare crypto/tls error.
func (s *Source) ServerConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequestClientCert,
		Time:       s.now,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := s.usable()
			if err != nil {
				return nil, err
			}
			return &c.m.cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := s.verifyPeer(cs, x509.ExtKeyUsageClientAuth, "")
			return err
		},
	}
	s.sessions.serverTickets(cfg, s)
	return cfg
}

// ClientConfig is the TLS configuration for dialing the tunnel of node
// expectedNode: the server must present a valid certificate of that node
// (ErrWrongPeer for another node's), and the client presents the current
// certificate. Sessions are resumed when the Source keeps a session cache,
// within one generation of material: a resumed handshake skips the
// certificates and signatures but not VerifyConnection, which judges the
// certificates remembered in the session against the current bundle and
// clock exactly as in a full handshake.
//
// The config may be reused for every connection to expectedNode.
func (s *Source) ClientConfig(expectedNode string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// crypto/tls would check DNS names against ServerName; node
		// certificates have none. VerifyConnection does the whole check,
		// on full and resumed handshakes alike.
		InsecureSkipVerify: true,
		Time:               s.now,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := s.usable()
			if err != nil {
				return nil, err
			}
			return &c.m.cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if expectedNode == "" {
				return fmt.Errorf("no expected node: %w", ErrWrongPeer)
			}
			_, err := s.verifyPeer(cs, x509.ExtKeyUsageServerAuth, expectedNode)
			return err
		},
	}
	if s.sessions != nil {
		cfg.ClientSessionCache = s.sessions.forNode(expectedNode, s)
	}
	return cfg
}

// verifyPeer judges the peer's certificates of a handshake against the
// material in use now.
func (s *Source) verifyPeer(cs tls.ConnectionState, usage x509.ExtKeyUsage, expected string) (string, error) {
	c, err := s.usable()
	if err != nil {
		return "", err
	}
	pc := peerCheck{td: s.td, roots: c.m.roots, now: s.now(), usage: usage, expected: expected,
		cache: &s.verified, gen: c.gen}
	node, err := pc.verify(cs.PeerCertificates)
	if err != nil {
		return "", fmt.Errorf("peer %s: %w", peerLabel(cs), err)
	}
	return node, nil
}

// peerLabel names the peer in errors: its first URI SAN when it has one.
func peerLabel(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) > 0 && len(cs.PeerCertificates[0].URIs) > 0 {
		return cs.PeerCertificates[0].URIs[0].String()
	}
	if len(cs.PeerCertificates) > 0 {
		return fmt.Sprintf("subject %q", cs.PeerCertificates[0].Subject.String())
	}
	return "without certificate"
}

// PeerNode is the node name of the peer of a connection whose handshake
// used ServerConfig or ClientConfig, which verified it (VerifyConnection
// runs on every handshake, resumed ones included). It reads the verified
// certificate; it does not verify anything itself, so it must not be
// used on connections made with other configurations.
func PeerNode(cs tls.ConnectionState) (string, error) {
	if !cs.HandshakeComplete {
		return "", errors.New("peer node: handshake not complete")
	}
	if len(cs.PeerCertificates) == 0 {
		return "", fmt.Errorf("peer node: %w", ErrNoCertificate)
	}
	id, err := leafID(cs.PeerCertificates[0])
	if err != nil {
		return "", fmt.Errorf("peer node: %w", err)
	}
	node, err := NodeName(id)
	if err != nil {
		return "", fmt.Errorf("peer node: %w", err)
	}
	return node, nil
}
