package k8s

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshless/meshless/daemon/certclient"
)

// canICase is one `kubectl auth can-i` question and its expected answer.
type canICase struct {
	want bool
	args []string
}

func yes(args ...string) canICase { return canICase{true, args} }
func no(args ...string) canICase  { return canICase{false, args} }

const (
	csrs       = "certificatesigningrequests.certificates.k8s.io"
	inMeshless = "--namespace=" + signerNS
	mwcs       = "mutatingwebhookconfigurations.admissionregistration.k8s.io"
	vwcs       = "validatingwebhookconfigurations.admissionregistration.k8s.io"
)

// testSignerRBAC asks the API server, with `kubectl auth can-i --as`,
// what install/kubernetes lets the signer's and the daemon's service
// accounts do: each exactly what it needs, and nothing next to it.
// Signers are no resource kubectl can discover (it then asks about
// "signers.certificates.k8s.io" in the core group): those questions go
// to the SubjectAccessReview API that can-i uses, with the same answer
// the API server's CSR admission gets.
func testSignerRBAC(ctx context.Context, t *testing.T, e *signerEnv) {
	signerSA := "system:serviceaccount:" + signerNS + ":meshless-signer"
	daemonSA := "system:serviceaccount:" + signerNS + ":meshless"
	checks := map[string][]canICase{
		signerSA: {
			yes("get", csrs), yes("list", csrs), yes("watch", csrs),
			yes("update", csrs, "--subresource=approval"), yes("update", csrs, "--subresource=status"),
			yes("get", "pods", "--all-namespaces"),
			yes("get", "secrets/meshless-ca", inMeshless), yes("watch", "secrets/meshless-ca", inMeshless),
			yes("get", "configmaps/meshless-ca-bundle", inMeshless), yes("update", "configmaps/meshless-ca-bundle", inMeshless),
			yes("create", "configmaps", inMeshless),

			no("create", csrs), no("update", csrs), no("patch", csrs), no("delete", csrs),
			no("list", "pods", "--all-namespaces"), no("watch", "pods", "--all-namespaces"),
			no("update", "pods", "--all-namespaces"), no("create", "pods", inMeshless),
			no("get", "secrets", inMeshless), no("list", "secrets", inMeshless),
			no("get", "secrets/other", inMeshless), no("get", "secrets/meshless-ca", "--namespace=default"),
			no("update", "secrets/meshless-ca", inMeshless),
			no("get", "configmaps/other", inMeshless), no("delete", "configmaps/meshless-ca-bundle", inMeshless),
			no("update", "configmaps/meshless-ca-bundle", "--namespace=default"),
			no("create", "serviceaccounts/token", inMeshless), no("get", "nodes"),

			// The /meshlet webhook's caBundle: that one configuration.
			yes("get", mwcs+"/meshless"), yes("update", mwcs+"/meshless"),
			no("update", mwcs+"/other"), no("get", mwcs+"/other"), no("patch", mwcs+"/meshless"),
			no("delete", mwcs+"/meshless"), no("create", mwcs), no("list", mwcs), no("watch", mwcs),
			no("update", vwcs+"/meshless"), no("get", vwcs+"/meshless"),
			no("update", "validatingadmissionpolicies.admissionregistration.k8s.io/meshless-daemon-csrs"),
			no("update", "services/meshless-webhook", inMeshless),
		},
		daemonSA: {
			yes("create", csrs), yes("get", csrs), yes("watch", csrs), yes("delete", csrs),
			yes("get", "configmaps/meshless-ca-bundle", inMeshless), yes("watch", "configmaps/meshless-ca-bundle", inMeshless),

			no("get", "secrets/meshless-ca", inMeshless), no("get", "secrets", inMeshless),
			no("list", csrs), no("update", csrs), no("patch", csrs),
			no("update", csrs, "--subresource=approval"), no("update", csrs, "--subresource=status"),
			no("update", "configmaps/meshless-ca-bundle", inMeshless), no("list", "configmaps", inMeshless),
			no("get", "configmaps/other", inMeshless), no("get", "configmaps/meshless-ca-bundle", "--namespace=default"),
			no("create", "configmaps", inMeshless),
			no("get", mwcs+"/meshless"), no("update", mwcs+"/meshless"),
		},
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4) // kubectl processes at a time
	for as, cases := range checks {
		for _, cc := range cases {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				args := append([]string{"auth", "can-i", "--as=" + as}, cc.args...)
				out, _ := e.c.Kubectl(args...) // exit status 1 means "no"
				if got, ok := canIAnswer(out); !ok || got != cc.want {
					t.Errorf("%s: can-i %s = %q, want %v", as, strings.Join(cc.args, " "), out, cc.want)
				}
			})
		}
	}
	wg.Wait()

	for _, sc := range []struct {
		as, verb, signer string
		want             bool
	}{
		{signerSA, "approve", certclient.SignerName, true},
		{signerSA, "sign", certclient.SignerName, true},
		{signerSA, "approve", "meshless.io/other", false},
		{signerSA, "approve", "kubernetes.io/kube-apiserver-client", false},
		{signerSA, "sign", "kubernetes.io/kubelet-serving", false},
		{signerSA, "sign", "kubernetes.io/*", false},
		{daemonSA, "approve", certclient.SignerName, false},
		{daemonSA, "sign", certclient.SignerName, false},
	} {
		if got := e.canISigner(ctx, t, sc.as, sc.verb, sc.signer); got != sc.want {
			t.Errorf("%s: %s signer %s = %v, want %v", sc.as, sc.verb, sc.signer, got, sc.want)
		}
	}
}

// canISigner asks whether the service account user may verb the signer
// (approve or sign its CSRs), as the service account is authenticated.
func (e *signerEnv) canISigner(ctx context.Context, t *testing.T, user, verb, signerName string) bool {
	t.Helper()
	ns := strings.Split(user, ":")[2]
	r, err := e.c.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Group: "certificates.k8s.io", Resource: "signers", Name: signerName, Verb: verb,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Status.Allowed
}

// canIAnswer reads kubectl auth can-i's answer: a line "yes", or "no"
// (possibly with " - reason"), among warnings such as the one kubectl
// prints for signers, which are not a resource the server lists.
func canIAnswer(out string) (answer, ok bool) {
	for _, l := range strings.Split(out, "\n") {
		switch l = strings.TrimSpace(l); {
		case l == "yes":
			return true, true
		case l == "no" || strings.HasPrefix(l, "no - "):
			return false, true
		}
	}
	return false, false
}

// testDaemonAdmission checks the ValidatingAdmissionPolicy of
// meshless.yaml with real pod-bound tokens: a daemon creates CSRs for
// the Meshless signer only and deletes only its own node's.
func testDaemonAdmission(ctx context.Context, t *testing.T, e *signerEnv) {
	n1 := e.podToken(ctx, t, e.pod(ctx, t, signerNS, "meshless-n1"))
	n2 := e.podToken(ctx, t, e.pod(ctx, t, signerNS, "meshless-n2"))
	client := func(token string) kubernetes.Interface {
		cs, err := kubernetes.NewForConfig(e.config(token))
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	req := nodeRequest(t, newKey(t, "p256"), "n1")
	_, err := client(n1).CertificatesV1().CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request: req, SignerName: "kubernetes.io/kube-apiserver-client", Usages: []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth},
		},
	}, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(fmt.Sprint(err), "meshless.io/node only") {
		t.Errorf("daemon creating a CSR for another signer: %v, want refused by the policy", err)
	}

	name := e.submit(ctx, t, n1, req, certclient.Usages(), nil)
	csrs := func(token string) error {
		return client(token).CertificatesV1().CertificateSigningRequests().Delete(ctx, name, metav1.DeleteOptions{})
	}
	if err := csrs(n2); !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(fmt.Sprint(err), "own node's") {
		t.Errorf("n2's daemon deleting n1's CSR: %v, want refused by the policy", err)
	}
	if err := csrs(n1); err != nil {
		t.Errorf("n1's daemon deleting its own CSR: %v", err)
	}
}
