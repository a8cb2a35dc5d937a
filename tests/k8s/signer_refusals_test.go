package k8s

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/install/signer"
)

// uidMismatch is a CSR made with the token of a pod that was deleted and
// recreated under the same name before the signer looked at it.
type uidMismatch struct {
	csr    string
	newPod *corev1.Pod
}

// prepareUIDMismatch runs before the signer starts, so that the signer
// sees the CSR only after its pod was replaced. (The API server itself
// refuses the old token from then on: the CSR must exist before.)
func prepareUIDMismatch(ctx context.Context, t *testing.T, e *signerEnv) uidMismatch {
	old := e.createPod(ctx, t, signerNS, "meshless-replaced", certclient.DefaultServiceAccount, "n1")
	name := e.submit(ctx, t, e.podToken(ctx, t, old), nodeRequest(t, newKey(t, "p256"), "n1"), certclient.Usages(), nil)
	return uidMismatch{csr: name, newPod: e.recreatePod(ctx, t, old)}
}

// refusalCase is one CSR and the signer's expected answer: "" approves,
// anything else is the Denied condition's reason.
type refusalCase struct {
	name   string
	token  string
	req    []byte
	usages []certificatesv1.KeyUsage
	exp    *int32
	want   string
	life   time.Duration // of the certificate, when approved (0: 24 h)
}

// testRefusals submits CSRs that differ from an approved one by one
// thing each, and checks the signer's decision and its reason.
func testRefusals(ctx context.Context, t *testing.T, e *signerEnv, uc uidMismatch) {
	daemonTok := e.podToken(ctx, t, e.pod(ctx, t, signerNS, "meshless-n1"))
	p256 := newKey(t, "p256")
	good := nodeRequest(t, p256, "n1")
	n1URI := "spiffe://cluster.local/meshless/node/n1"

	// Other identities that may create CSRs: another service account of
	// the namespace, and one named like the daemon's in another.
	for _, sa := range [][2]string{{signerNS, "other"}, {"default", "meshless"}} {
		if _, err := e.c.Client.CoreV1().ServiceAccounts(sa[0]).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa[1]}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.allowCSRCreate(ctx, t, sa[0], sa[1])
	}
	otherTok := e.podToken(ctx, t, e.createPod(ctx, t, signerNS, "other-n1", "other", "n1"))
	elsewhereTok := e.podToken(ctx, t, e.createPod(ctx, t, "default", "meshless-n1", "meshless", "n1"))
	node, err := e.c.Client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	std := certclient.Usages()
	cases := []refusalCase{
		{name: "daemon pod on n1", token: daemonTok, req: good},
		{name: "daemon pod on n1, Ed25519 key", token: daemonTok, req: nodeRequest(t, newKey(t, "ed25519"), "n1")},
		{name: "daemon pod on n1, key encipherment too", token: daemonTok, req: good,
			usages: append(std, certificatesv1.UsageKeyEncipherment)},
		{name: "expirationSeconds 600", token: daemonTok, req: good, exp: new(int32(600)), life: 10 * time.Minute},
		{name: "expirationSeconds 3 days", token: daemonTok, req: good, exp: new(int32(3 * 86400))},
		{name: "recreated pod, its own token", token: e.podToken(ctx, t, uc.newPod), req: good},

		{name: "wrong service account", token: otherTok, req: good, want: signer.ReasonNotDaemon},
		{name: "daemon's account name in another namespace", token: elsewhereTok, req: good, want: signer.ReasonNotDaemon},
		{name: "plain token of the daemon's account", token: e.token(ctx, t, signerNS, "meshless", nil, ""), req: good, want: signer.ReasonNotPodBound},
		{name: "node-bound token of the daemon's account", token: e.token(ctx, t, signerNS, "meshless", node, "Node"), req: good, want: signer.ReasonNotPodBound},
		{name: "pod on n1 asks for n2", token: daemonTok, req: nodeRequest(t, p256, "n2"), want: signer.ReasonWrongSAN},
		{name: "another trust domain", token: daemonTok, req: rawRequest(t, p256, []string{"spiffe://other.example/meshless/node/n1"}, nil), want: signer.ReasonWrongSAN},
		{name: "extra DNS SAN", token: daemonTok, req: rawRequest(t, p256, []string{n1URI}, []string{"n1.example"}), want: signer.ReasonExtraSAN},
		{name: "extra URI SAN", token: daemonTok, req: rawRequest(t, p256, []string{n1URI, "spiffe://cluster.local/meshless/node/n2"}, nil), want: signer.ReasonExtraSAN},
		{name: "RSA key", token: daemonTok, req: rawRequest(t, newKey(t, "rsa"), []string{n1URI}, nil), want: signer.ReasonKeyType},
		{name: "ECDSA P-384 key", token: daemonTok, req: rawRequest(t, newKey(t, "p384"), []string{n1URI}, nil), want: signer.ReasonKeyType},
		{name: "no client auth usage", token: daemonTok, req: good, usages: std[:2], want: signer.ReasonBadUsages},
		{name: "code signing usage", token: daemonTok, req: good, usages: append(std, certificatesv1.UsageCodeSigning), want: signer.ReasonBadUsages},
	}
	csrs := e.c.Client.CertificatesV1().CertificateSigningRequests()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.usages == nil {
				tc.usages = std
			}
			name := e.submit(ctx, t, tc.token, tc.req, tc.usages, tc.exp)
			defer csrs.Delete(ctx, name, metav1.DeleteOptions{})
			checkDecision(t, e.decided(ctx, t, name), tc)
		})
	}
	t.Run("pod replaced before the signer looked", func(t *testing.T) {
		defer csrs.Delete(ctx, uc.csr, metav1.DeleteOptions{})
		checkDecision(t, e.decided(ctx, t, uc.csr), refusalCase{want: signer.ReasonPodUIDMismatch})
	})
}

// checkDecision compares the signer's decision on csr with tc's.
func checkDecision(t *testing.T, csr *certificatesv1.CertificateSigningRequest, tc refusalCase) {
	t.Helper()
	var cond *certificatesv1.CertificateSigningRequestCondition
	for i, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateFailed {
			cond = &csr.Status.Conditions[i]
		}
	}
	if cond == nil {
		t.Fatalf("no decision: %+v", csr.Status)
	}
	t.Logf("%s %s: %s", cond.Type, cond.Reason, cond.Message)
	if tc.want != "" {
		if cond.Type != certificatesv1.CertificateDenied || cond.Reason != tc.want || cond.Message == "" {
			t.Fatalf("got %s %q, want Denied %q with a message", cond.Type, cond.Reason, tc.want)
		}
		if len(csr.Status.Certificate) > 0 {
			t.Fatal("denied, yet a certificate")
		}
		return
	}
	if cond.Type != certificatesv1.CertificateApproved || cond.Reason != signer.ReasonApproved || !strings.Contains(cond.Message, "on node n1") {
		t.Fatalf("got %s %q %q, want Approved %q naming the node", cond.Type, cond.Reason, cond.Message, signer.ReasonApproved)
	}
	chain, err := identity.ParseCertificates(csr.Status.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/meshless/node/n1" || len(leaf.DNSNames) != 0 {
		t.Errorf("leaf SANs %v %v", leaf.URIs, leaf.DNSNames)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.ExtKeyUsage) != 2 {
		t.Errorf("leaf usages %v %v, want digital signature; server auth, client auth", leaf.KeyUsage, leaf.ExtKeyUsage)
	}
	want := tc.life
	if want == 0 {
		want = 24 * time.Hour
	}
	// Issued certificates are backdated a minute against clock skew.
	if got := leaf.NotAfter.Sub(leaf.NotBefore) - time.Minute; got < want-time.Second || got > want+time.Second {
		t.Errorf("lifetime %s, want %s", got, want)
	}
}

// nodeRequest is what a daemon sends: identity.NewNodeCSR.
func nodeRequest(t *testing.T, key crypto.Signer, node string) []byte {
	t.Helper()
	req, err := identity.NewNodeCSR(identity.IssueOptions{}, node, key)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// rawRequest is a CSR with any key and SANs, as an attacker would make.
func rawRequest(t *testing.T, key crypto.Signer, uris, dns []string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{DNSNames: dns}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func newKey(t *testing.T, kind string) crypto.Signer {
	t.Helper()
	var k crypto.Signer
	var err error
	switch kind {
	case "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "rsa":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}
