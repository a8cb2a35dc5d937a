// Package certclient gets a node daemon's certificate from the Meshless
// signer (install/signer) through the Kubernetes CertificateSigningRequest
// API, and keeps it renewed in an identity.Source:
//
//	cfg, err := rest.InClusterConfig()            // a pod-bound token
//	src, err := identity.NewSource(identity.Options{Node: node})
//	c, err := certclient.New(cfg, src, certclient.Options{Node: node})
//	go c.Run(ctx)                                 // renews at half life
//	<-c.Ready()                                   // first certificate in src
//	ln := tls.NewListener(tcpLn, src.ServerConfig())
//
// # One request
//
// Request makes an ECDSA P-256 key in memory (it is never written
// anywhere), a CSR with identity.NewNodeCSR (the only SAN:
// spiffe://<td>/meshless/node/<node>), and creates a
// CertificateSigningRequest with spec.signerName SignerName,
// expirationSeconds DefaultExpirationSeconds and exactly Usages(). It
// watches that CSR until it carries a certificate, is Denied or Failed
// (ErrDenied, with the CSR's name and the signer's reason), or Timeout
// passes (ErrTimeout), and then deletes it in every case, so that no CSR
// piles up in etcd. The bundle comes from the ConfigMap
// DefaultBundleConfigMap (key BundleKey) that the signer publishes.
//
// Who the node is does not come from the request: the signer reads the
// pod, its UID and its node from the CSR's spec.username and spec.extra,
// which the API server fills from the daemon's pod-bound service-account
// token (in-cluster tokens are pod-bound since Kubernetes 1.21, and carry
// the node since 1.30), and checks them against the pod.
//
// # Renewal and rotation
//
// Run requests at start, then at the certificate's RenewAt (half its
// life), retrying failures with backoff (1 s doubling to RetryMax, 60 s)
// while the material in use stays. It also watches the bundle ConfigMap:
// a new bundle is paired with the certificate in use at once, and if the
// certificate no longer leads to a root of it, Run renews immediately.
//
// # Size
//
// The package talks to the API server with two rest.RESTClients over a
// scheme of certificates.k8s.io/v1 and core/v1, never client-go's
// generated clientset, which would triple meshlessd (see daemon/kube).
// Linked into meshlessd it adds a few hundred KiB; docs/security.md has
// the measurement.
package certclient
