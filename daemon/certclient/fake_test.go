package certclient

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/internal/watchone"
)

// fakeAPI is an API server with a signer inside: a created CSR is
// decided at once (signed by ca for node, or denied), or left pending
// when hang is set. The bundle ConfigMap can be changed, which its
// watchers see.
type fakeAPI struct {
	mu      sync.Mutex
	ca      *identity.CA
	node    string // who the fake authenticates every requester as
	opts    identity.IssueOptions
	deny    string // reason to deny with; "" signs
	hang    bool
	csrs    map[string]*certificatesv1.CertificateSigningRequest
	created []*certificatesv1.CertificateSigningRequest
	deleted []string
	cm      *corev1.ConfigMap
	bundleW []*watch.RaceFreeFakeWatcher
	n       int
}

func newFakeAPI(ca *identity.CA, node string, opts identity.IssueOptions) *fakeAPI {
	f := &fakeAPI{ca: ca, node: node, opts: opts, csrs: map[string]*certificatesv1.CertificateSigningRequest{}}
	f.cm = &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultBundleConfigMap, Namespace: DefaultNamespace, ResourceVersion: "1"},
		Data:       map[string]string{BundleKey: string(pemCerts(ca.Bundle()))},
	}
	return f
}

func pemCerts(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

func (f *fakeAPI) createCSR(_ context.Context, csr *certificatesv1.CertificateSigningRequest) (*certificatesv1.CertificateSigningRequest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	csr = csr.DeepCopy()
	csr.Name = fmt.Sprintf("%s%d", csr.GenerateName, f.n)
	csr.ResourceVersion = "1"
	f.created = append(f.created, csr.DeepCopy())
	switch {
	case f.hang:
	case f.deny != "":
		csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{
			Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: f.deny, Message: "the fake says no"}}
	default:
		req, err := identity.ParseCSR(csr.Spec.Request)
		if err != nil {
			return nil, err
		}
		chain, err := f.ca.SignNodeCSR(req, f.node, f.opts)
		if err != nil {
			return nil, err
		}
		csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "Fake"}}
		csr.Status.Certificate = pemCerts(chain)
	}
	f.csrs[csr.Name] = csr
	return csr.DeepCopy(), nil
}

func (f *fakeAPI) deleteCSR(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.csrs[name]; !ok {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "certificatesigningrequests"}, name)
	}
	delete(f.csrs, name)
	f.deleted = append(f.deleted, name)
	return nil
}

func (f *fakeAPI) csr(name string) watchone.Funcs[*certificatesv1.CertificateSigningRequest] {
	return watchone.Funcs[*certificatesv1.CertificateSigningRequest]{
		Get: func(context.Context) (*certificatesv1.CertificateSigningRequest, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if c, ok := f.csrs[name]; ok {
				return c.DeepCopy(), nil
			}
			return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "certificatesigningrequests"}, name)
		},
		// Decisions are made at creation: a watch sees nothing new.
		Watch: func(context.Context, string) (watch.Interface, error) { return watch.NewRaceFreeFake(), nil },
	}
}

func (f *fakeAPI) bundle() watchone.Funcs[*corev1.ConfigMap] {
	return watchone.Funcs[*corev1.ConfigMap]{
		Get: func(context.Context) (*corev1.ConfigMap, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.cm.DeepCopy(), nil
		},
		Watch: func(context.Context, string) (watch.Interface, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			w := watch.NewRaceFreeFake()
			f.bundleW = append(f.bundleW, w)
			return w, nil
		},
	}
}

// setBundle publishes roots, as the signer would, to the ConfigMap and
// its watchers.
func (f *fakeAPI) setBundle(roots []*x509.Certificate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cm = f.cm.DeepCopy()
	f.cm.Data[BundleKey] = string(pemCerts(roots))
	f.cm.ResourceVersion += "1"
	for _, w := range f.bundleW {
		if !w.IsStopped() {
			w.Modify(f.cm.DeepCopy())
		}
	}
}

func (f *fakeAPI) set(fn func(f *fakeAPI)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// counts are the CSRs created and deleted so far.
func (f *fakeAPI) counts() (created, deleted int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.created), len(f.deleted)
}

// pending reports whether a CSR exists that was not deleted.
func (f *fakeAPI) pending() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.csrs) > 0 {
		return errors.New("csrs left behind")
	}
	return nil
}
