package identity

import (
	"bytes"
	"crypto/tls"
	"strconv"
)

// DefaultSessionCacheSize is how many client sessions a Source keeps: one
// per peer node that this node dials, for a cluster of that many nodes.
// Measured: about 7 KB of heap per peer (session, ticket, parsed peer
// certificate and verification cache entries, both ends counted), so a
// full cache stays under a megabyte.
const DefaultSessionCacheSize = 128

// Why resumption is on, and why it is safe here.
//
// A resumed TLS 1.3 handshake (PSK with a fresh ECDHE, which crypto/tls
// always uses, so forward secrecy stays) skips the certificates and the
// four ECDSA signatures and verifications of a full one. What resumption
// skips in crypto/tls is the certificate exchange and
// VerifyPeerCertificate; it still calls VerifyConnection on both sides
// with the certificates remembered in the session. Every check of this
// package lives in VerifyConnection, so a resumed handshake is judged
// like a full one: current bundle, current clock, trust domain, expected
// node. On top of that:
//
//   - crypto/tls itself declines, on both sides, a session whose peer
//     leaf has expired (by Config.Time, the Source's clock);
//   - sessions are bound to the generation of the material: the client
//     keys its cache by (node, generation), the server writes the
//     generation into the ticket and declines other ones. After any
//     rotation (own certificate or bundle) the next handshake is a full
//     one with the new certificate, and a session made under a bundle
//     that has since lost a root is never offered.
//
// Declining a session means a full handshake, never a failure.
//
// What it buys (BenchmarkHandshake: loopback, dial to first byte, CPU of
// both ends; best of 8 on a busy 2-vCPU VM): plain TCP 0.12 ms, full
// mutual handshake 1.0 ms, resumed 0.86 ms. Most of what remains is the
// key exchange, X25519MLKEM768 by default (post-quantum hybrid); X25519
// alone would make them 0.73 and 0.55 ms. The default is kept: the
// tunnel carries application bytes, and recorded traffic should not
// become readable later. Either way a handshake does not belong on an
// application connection's critical path; the tunnel pools connections.

// sessionCache is a Source's store of client sessions, shared by all its
// ClientConfigs.
type sessionCache struct {
	lru tls.ClientSessionCache
}

// newSessionCache makes a cache of size sessions (0: the default); nil,
// meaning no resumption, for a negative size.
func newSessionCache(size int) *sessionCache {
	if size < 0 {
		return nil
	}
	if size == 0 {
		size = DefaultSessionCacheSize
	}
	return &sessionCache{lru: tls.NewLRUClientSessionCache(size)}
}

// forNode is the tls.ClientSessionCache of a ClientConfig for node.
func (c *sessionCache) forNode(node string, s *Source) tls.ClientSessionCache {
	return &nodeSessions{c: c, node: node, src: s}
}

// nodeSessions keys the shared cache by expected node and material
// generation, instead of crypto/tls's key (the server name, or else the
// address): a session made while dialing one node is never offered while
// dialing another through the same address, one node's session stays
// usable if its address changes (only its daemon can open the ticket),
// and none survives a rotation. Stale entries are not deleted; the LRU
// ages them out.
type nodeSessions struct {
	c    *sessionCache
	node string
	src  *Source
}

func (n *nodeSessions) key() string {
	return strconv.FormatUint(n.src.Generation(), 10) + "/" + n.node
}

// Get returns the session for this node and generation; crypto/tls's key
// is ignored.
func (n *nodeSessions) Get(string) (*tls.ClientSessionState, bool) {
	return n.c.lru.Get(n.key())
}

// Put stores (or, with nil, deletes) the session for this node and
// generation.
func (n *nodeSessions) Put(_ string, cs *tls.ClientSessionState) {
	n.c.lru.Put(n.key(), cs)
}

// genTagPrefix marks the generation in a ticket's SessionState.Extra.
const genTagPrefix = "meshless-gen:"

func genTag(gen uint64) []byte {
	return strconv.AppendUint([]byte(genTagPrefix), gen, 10)
}

// serverTickets makes cfg issue tickets stamped with the generation of
// s's material and accept only tickets of the current one; without a
// cache (resumption off) it turns tickets off, which also saves the
// server the work of sealing them.
func (c *sessionCache) serverTickets(cfg *tls.Config, s *Source) {
	if c == nil {
		cfg.SessionTicketsDisabled = true
		return
	}
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ss.Extra = append(ss.Extra, genTag(s.Generation()))
		return cfg.EncryptTicket(cs, ss)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := cfg.DecryptTicket(identity, cs)
		if err != nil || ss == nil {
			// Not ours, corrupt, or sealed with a retired key: a full
			// handshake, not a refusal.
			return nil, nil
		}
		want := genTag(s.Generation())
		for _, e := range ss.Extra {
			if bytes.Equal(e, want) {
				return ss, nil
			}
		}
		return nil, nil
	}
}
