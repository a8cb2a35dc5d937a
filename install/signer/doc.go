// Package signer is the Meshless Kubernetes signer: the Deployment that
// issues node daemons their certificates through the
// certificates.k8s.io/v1 CertificateSigningRequest API, for
// spec.signerName certclient.SignerName ("meshless.io/node").
//
//	cfg, err := signer.RESTConfig("", signer.DefaultQPS, signer.DefaultBurst) // in-cluster
//	cs, err := kubernetes.NewForConfig(cfg)
//	s, err := signer.New(cs, signer.Options{Webhook: &signer.WebhookOptions{}}) // namespace meshless-system, ...
//	go http.ListenAndServe(":15020", s.Handler()) // /healthz /readyz /metrics
//	ln, err := net.Listen("tcp", ":9443")
//	go s.ServeWebhook(ctx, ln)                     // the /meshlet admission webhook, HTTPS
//	err = s.Run(ctx)
//
// # Who asks
//
// The daemon (daemon/certclient) only proposes a key and repeats its node
// ID; the signer decides who it is from the fields the API server set on
// the CSR from the requester's credentials, which no requester can
// choose. A CSR is approved only if all of these hold, in this order, and
// otherwise Denied with the Reason* of the first that fails:
//
//  1. spec.username is system:serviceaccount:<namespace>:<service
//     account> of the daemon (ReasonNotDaemon);
//  2. spec.extra has exactly one pod name, pod UID and node name: the
//     token was bound to a pod (ReasonNotPodBound);
//  3. that pod, read from the API server (not a cache), exists
//     (ReasonPodNotFound), has that UID (ReasonPodUIDMismatch), runs on
//     that node (ReasonPodNotOnNode), is of the daemon's service account
//     and namespace (ReasonPodNotDaemon), and is neither being deleted nor
//     ended (ReasonPodTerminated);
//  4. spec.usages are digital signature, server auth and client auth,
//     key encipherment optional, nothing else (ReasonBadUsages);
//  5. identity.CA.SignNodeCSR accepts the request for the node of step 2:
//     a valid signature (ReasonBadRequest), an ECDSA P-256 or Ed25519 key
//     (ReasonKeyType), no SAN but one URI (ReasonExtraSAN), and that URI
//     is spiffe://<trust domain>/meshless/node/<node> (ReasonWrongSAN).
//
// Then it adds the Approved condition (ReasonApproved, naming the pod and
// node) and writes status.certificate: the leaf and the CA's
// intermediates, PEM. The lifetime is spec.expirationSeconds clamped to
// [MinTTL, MaxTTL], MaxTTL when absent, and never beyond the CA's. The
// certificate's key usage is digital signature and its extended key
// usages server auth and client auth, whatever else was asked. A CSR
// that someone else approved is checked the same way and gets a Failed
// condition instead of Denied. Each refusal is logged once; a pod that
// could not be read, an update conflict or a missing CA are retried,
// with backoff, never refused.
//
// # The CA
//
// The CA's certificate and key come from a Secret (DefaultCASecret, keys
// ca.crt and ca.key) that only the signer's service account can read,
// watched: a changed Secret is loaded at once, its roots published under
// certclient.BundleKey of the bundle ConfigMap, and only then used to
// sign. A missing or broken Secret is logged and the CA in use kept.
//
// # The admission webhook
//
// With Options.Webhook the signer also serves install/webhook, which
// gives the pods of a Meshlet their /meshlet, because it already holds
// what a webhook needs: a CA that the API server can be told to trust.
// Run issues a serving certificate from the CA in use (an ECDSA P-256
// key in memory; the only SAN is the Service's DNS name
// <service>.<namespace>.svc; server auth only; DefaultWebhookTTL) and
// renews it at half its life and whenever the CA changes. It keeps the
// caBundle of each webhook of the MutatingWebhookConfiguration
// (DefaultWebhookConfiguration) equal to the CA's roots: written before
// a certificate of a new CA is served, with the previous CA's roots kept
// for a few minutes, and checked every minute (the signer has get and
// update on that one configuration, no watch). With
// WebhookOptions.ManualCABundle the operator keeps caBundle instead.
//
// # Throughput
//
// Workers handle CSRs in parallel, and RESTConfig raises client-go's
// rate limit (DefaultQPS): each certificate costs three requests here, so
// client-go's default 5 QPS would cap issuance below two certificates a
// second. docs/security.md has the measured rate.
package signer
