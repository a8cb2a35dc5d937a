// Package identity is Meshless's node identity: SPIFFE IDs, a small CA for
// standalone clusters, the node's rotating TLS material, and the mutual
// TLS 1.3 configurations of the cross-node tunnel.
//
// A standalone cluster (what `meshlessctl ca` does):
//
//	ca, err := identity.InitCA("/etc/meshless/ca", identity.CAOptions{})
//	m, err := identity.IssueNode("/etc/meshless/ca", "n1", "/etc/meshless/tls", identity.IssueOptions{})
//
// A node daemon (meshlessd --tls-dir):
//
//	src, err := identity.NewSource(identity.Options{Node: "n1", Dir: "/etc/meshless/tls"})
//	go src.Run(ctx)                                   // re-reads the files when they change
//	ln := tls.NewListener(tcpLn, src.ServerConfig())  // port 15008
//	...
//	node, err := identity.PeerNode(conn.ConnectionState()) // after the handshake
//
//	c := tls.Client(tcpConn, src.ClientConfig("n2"))  // the node the route says
//	err := c.HandshakeContext(ctx)
//	metrics.Fail(identity.Reason(err))                 // tls_untrusted, tls_expired, ...
//
// A Kubernetes signer and its client:
//
//	csrPEM, err := identity.NewNodeCSR(opts, "n1", key)       // node side
//	chain, err := ca.SignNodeCSR(csr, authenticatedNode, opts) // signer side
//	m, err := identity.NewMaterial(bundle, chain, key)         // node side again
//	err = src.Set(m)
//
// # Identity scheme
//
// Each node daemon holds one short-lived (24 h) X.509 certificate whose
// only SAN is the URI spiffe://<trust-domain>/meshless/node/<node>. The
// CA key never sits on a node. Workload identities,
// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>
// (WorkloadID), are never in a certificate: the receiving daemon derives
// them from its own view of the cluster, and only for pods of the node
// that PeerNode authenticated. So a node can speak for its own pods and
// for nobody else's.
//
// # Verification and refusals
//
// Both tunnel ends verify the other's chain against the CURRENT trust
// bundle of their Source (which may hold two roots during a CA rotation)
// in VerifyConnection, which crypto/tls calls on full and resumed
// handshakes alike. Refusals wrap one sentinel each (ErrUntrusted,
// ErrTrustDomain, ErrExpired, ErrWrongPeer, ErrNotNode, ErrNoCertificate,
// ErrNoIdentity) and Reason maps any handshake error to a short metric
// label. See session.go for why session resumption is on and safe, and
// verifyCache for why a chain's signatures are verified once per
// generation of material.
//
// # Rotation
//
// Source re-reads ca.crt, tls.crt and tls.key when their mtime, size or
// inode changes (Run polls every 5 s and loads a change once it has held
// for one poll; Reload on demand), or takes material from Set. Bad material (unparsable, key mismatch, expired,
// another node or trust domain, not signed by its own bundle) is refused
// and the last good material kept. New handshakes use the new material at
// once; established connections are not touched. RenewAt is half-way
// through the certificate's life.
//
// A CA rotation: make a new CA, put its certificate first and the old
// root after it in the CA directory's ca.crt with the new key as ca.key,
// re-issue every node (their bundles now hold both roots), wait for the
// old leaves to expire (24 h), then drop the old root and re-issue.
//
// # Dependencies and size
//
// SPIFFE ID parsing uses github.com/spiffe/go-spiffe/v2/spiffeid (v2.9.0),
// the reference implementation of the spec's character rules. The rest
// of go-spiffe does not fit: its tlsconfig verifies in
// VerifyPeerCertificate, which crypto/tls skips on resumed sessions, and
// builds configs without TLS 1.3-only, typed refusals or the generation
// binding of sessions; x509svid.Verify rebuilds a cert pool per call and
// checks no extended key usage. Those parts here are a few hundred lines
// on crypto/x509 and crypto/tls.
//
// Measured on meshlessd (CGO_ENABLED=0, -trimpath -ldflags '-s -w'):
// 20,512,930 bytes without this package; 20,791,458 (+272 KiB) with it
// linked and used (NewSource, both configs, PeerNode, Reason). Of that,
// about 192 KiB is crypto/tls's handshake code, which nothing else in
// meshlessd linked and any implementation pays; go-spiffe's spiffeid,
// x509svid, x509bundle and tlsconfig all together would add 60 KiB over
// a std-only equivalent. go.mod gains one require line and go.sum two;
// go-spiffe's own dependencies (gRPC, go-jose) are not linked, since only
// imported packages count. At run time a Source holds one Material (a few
// KiB) plus its session and verification caches (DefaultSessionCacheSize).
package identity
