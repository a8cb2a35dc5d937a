package certclient

import (
	"context"
	"fmt"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/meshless/meshless/internal/watchone"
)

// SignerName is the Meshless signer of node certificates, the
// spec.signerName of every CertificateSigningRequest a node daemon makes
// and the only one the signer (install/signer) handles. RBAC names it:
// the signer's ClusterRole may approve and sign for it and nothing else.
const SignerName = "meshless.io/node"

// DefaultNamespace is the namespace of Meshless: the DaemonSet, the
// signer, the CA Secret and the trust bundle ConfigMap
// (install/kubernetes).
const DefaultNamespace = "meshless-system"

// DefaultServiceAccount is the node daemon's service account, the only
// requester whose CSRs the signer approves.
const DefaultServiceAccount = "meshless"

// The trust bundle: the signer publishes the CA's roots (two during a CA
// rotation), PEM, under BundleKey of this ConfigMap; daemons read and
// watch it. A ConfigMap, not a Secret: roots are public, and the daemon
// must be able to read no Secret at all.
const (
	DefaultBundleConfigMap = "meshless-ca-bundle"
	BundleKey              = "ca.crt"
)

// DefaultExpirationSeconds is the lifetime a daemon asks for (spec.
// expirationSeconds): 24 hours, renewed at half of it. The signer clamps
// what it grants to [10 min, 24 h].
const DefaultExpirationSeconds = 24 * 60 * 60

// Usages are the key usages of a node certificate request, exactly: a
// node daemon is both ends of TLS 1.3 tunnels (server auth, client auth)
// and signs its handshakes (digital signature). Key encipherment is not
// asked for: it is RSA key transport, which node keys (ECDSA P-256) and
// TLS 1.3 never do. The signer also accepts requests that add it, as
// generic Kubernetes clients do, and grants digital signature alone.
func Usages() []certificatesv1.KeyUsage {
	return []certificatesv1.KeyUsage{
		certificatesv1.UsageDigitalSignature,
		certificatesv1.UsageServerAuth,
		certificatesv1.UsageClientAuth,
	}
}

// api is what the client does on the API server: restAPI, or a fake in
// the unit tests.
type api interface {
	createCSR(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) (*certificatesv1.CertificateSigningRequest, error)
	deleteCSR(ctx context.Context, name string) error
	csr(name string) watchone.Funcs[*certificatesv1.CertificateSigningRequest]
	bundle() watchone.Funcs[*corev1.ConfigMap]
}

// restAPI talks to the API server with two plain REST clients over a
// scheme of certificates.k8s.io/v1 and core/v1 only, like daemon/kube
// and for the same reason: client-go's generated clientset registers
// every API group at init and would triple meshlessd's binary and
// resident memory for five calls.
type restAPI struct {
	certs, core *rest.RESTClient
	namespace   string
	configMap   string
}

func newRESTAPI(cfg *rest.Config, namespace, configMap string) (*restAPI, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, certificatesv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("scheme: %w", err)
		}
	}
	codecs := serializer.WithoutConversionCodecFactory{CodecFactory: serializer.NewCodecFactory(scheme)}
	client := func(apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.APIPath, c.GroupVersion, c.NegotiatedSerializer = apiPath, &gv, codecs
		if c.ContentType == "" {
			c.ContentType = runtime.ContentTypeJSON
		}
		return rest.RESTClientFor(c)
	}
	certs, err := client("/apis", certificatesv1.SchemeGroupVersion)
	if err != nil {
		return nil, fmt.Errorf("certificates client: %w", err)
	}
	core, err := client("/api", corev1.SchemeGroupVersion)
	if err != nil {
		return nil, fmt.Errorf("core client: %w", err)
	}
	return &restAPI{certs: certs, core: core, namespace: namespace, configMap: configMap}, nil
}

const csrResource = "certificatesigningrequests"

func (a *restAPI) createCSR(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) (*certificatesv1.CertificateSigningRequest, error) {
	out := &certificatesv1.CertificateSigningRequest{}
	err := a.certs.Post().Resource(csrResource).Body(csr).Do(ctx).Into(out)
	return out, err
}

func (a *restAPI) deleteCSR(ctx context.Context, name string) error {
	return a.certs.Delete().Resource(csrResource).Name(name).Do(ctx).Error()
}

func (a *restAPI) csr(name string) watchone.Funcs[*certificatesv1.CertificateSigningRequest] {
	return watchone.Funcs[*certificatesv1.CertificateSigningRequest]{
		Get: func(ctx context.Context) (*certificatesv1.CertificateSigningRequest, error) {
			out := &certificatesv1.CertificateSigningRequest{}
			err := a.certs.Get().Resource(csrResource).Name(name).Do(ctx).Into(out)
			return out, err
		},
		Watch: func(ctx context.Context, rv string) (watch.Interface, error) {
			return a.certs.Get().Resource(csrResource).
				VersionedParams(byName(name, rv), metav1.ParameterCodec).Watch(ctx)
		},
	}
}

func (a *restAPI) bundle() watchone.Funcs[*corev1.ConfigMap] {
	return watchone.Funcs[*corev1.ConfigMap]{
		Get: func(ctx context.Context) (*corev1.ConfigMap, error) {
			out := &corev1.ConfigMap{}
			err := a.core.Get().Namespace(a.namespace).Resource("configmaps").Name(a.configMap).Do(ctx).Into(out)
			return out, err
		},
		Watch: func(ctx context.Context, rv string) (watch.Interface, error) {
			return a.core.Get().Namespace(a.namespace).Resource("configmaps").
				VersionedParams(byName(a.configMap, rv), metav1.ParameterCodec).Watch(ctx)
		},
	}
}

// byName are the options of a watch of one object. The field selector on
// the name is what lets RBAC authorize the watch against resourceNames
// (the daemon may watch the bundle ConfigMap and no other).
func byName(name, rv string) *metav1.ListOptions {
	return &metav1.ListOptions{
		Watch:           true,
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", name).String(),
		ResourceVersion: rv,
	}
}
