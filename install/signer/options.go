package signer

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/identity"
)

// Lifetimes the signer grants: a CSR's spec.expirationSeconds clamped to
// [MinTTL, MaxTTL], MaxTTL when it has none. The API server already
// refuses less than 600 s; 24 h is the longest a stolen node key should
// be worth anything.
const (
	MinTTL = 10 * time.Minute
	MaxTTL = identity.DefaultNodeTTL
)

// Defaults of Options and of the command's flags.
const (
	DefaultCASecret = "meshless-ca"
	DefaultWorkers  = 8
	// DefaultQPS and DefaultBurst replace client-go's 5 QPS and 10
	// burst. Each certificate costs the signer three requests (the
	// pod, the approval, the certificate), so the default would cap
	// issuance near 1.7 certificates a second, and a cluster of 1,000
	// nodes starting at once (or renewing after a CA rotation) would
	// wait ten minutes for its tunnels. 200 QPS lets the API server set
	// the pace; its priority and fairness still protect it from a
	// runaway signer, and a limit remains so that a loop here cannot
	// make thousands of requests a second.
	DefaultQPS   = 200
	DefaultBurst = 400
)

// Options configure a Signer.
type Options struct {
	// Namespace of the daemon's pods, the CA Secret and the bundle
	// ConfigMap; certclient.DefaultNamespace when empty.
	Namespace string
	// ServiceAccount of the node daemon in Namespace, the only requester
	// approved; certclient.DefaultServiceAccount when empty.
	ServiceAccount string
	// CASecret holds the CA (keys ca.crt and ca.key); DefaultCASecret
	// when empty.
	CASecret string
	// BundleConfigMap is where the CA's roots are published (key
	// certclient.BundleKey); certclient.DefaultBundleConfigMap when
	// empty.
	BundleConfigMap string
	// TrustDomain of the node IDs; identity.DefaultTrustDomain when
	// zero.
	TrustDomain spiffeid.TrustDomain
	// Workers handle CSRs in parallel; DefaultWorkers when zero. Each
	// spends its time waiting for the API server, so a few more than
	// the CPUs keep it busy.
	Workers int
	// Now is the clock of the certificates; time.Now when nil.
	Now func() time.Time
	// Logger; slog.Default when nil.
	Logger *slog.Logger
	// Webhook, when not nil, makes the signer also the server of the
	// admission webhook that gives the pods of a Meshlet their /meshlet
	// (install/webhook; see ServeWebhook), with a serving certificate
	// of the CA it holds.
	Webhook *WebhookOptions
}

// Defaults of WebhookOptions.
const (
	DefaultWebhookService       = "meshless-webhook"
	DefaultWebhookConfiguration = "meshless"
	// DefaultWebhookTTL is the serving certificate's lifetime; it is
	// renewed at half of it. Its key lives in the signer's memory only,
	// so each start makes a new one.
	DefaultWebhookTTL = 24 * time.Hour
)

// WebhookOptions configure the admission webhook the signer serves.
type WebhookOptions struct {
	// Service is the webhook's Service, in Options.Namespace; the
	// certificate's only SAN is its DNS name <service>.<namespace>.svc,
	// the name the API server checks. DefaultWebhookService when empty.
	Service string
	// Configuration is the MutatingWebhookConfiguration whose
	// webhooks' caBundle the signer keeps equal to the CA's roots;
	// DefaultWebhookConfiguration when empty.
	Configuration string
	// ManualCABundle leaves caBundle to the operator: the signer then
	// needs no right on the configuration (docs/security.md says why one
	// may want that).
	ManualCABundle bool
	// TTL of the serving certificate; DefaultWebhookTTL when zero.
	TTL time.Duration
}

// dnsName is the name the API server expects the webhook to serve: the
// Service's, <service>.<namespace>.svc.
func (w WebhookOptions) dnsName(namespace string) string {
	return w.Service + "." + namespace + ".svc"
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = certclient.DefaultNamespace
	}
	if o.ServiceAccount == "" {
		o.ServiceAccount = certclient.DefaultServiceAccount
	}
	if o.CASecret == "" {
		o.CASecret = DefaultCASecret
	}
	if o.BundleConfigMap == "" {
		o.BundleConfigMap = certclient.DefaultBundleConfigMap
	}
	if o.TrustDomain.IsZero() {
		o.TrustDomain = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Webhook != nil {
		w := *o.Webhook
		if w.Service == "" {
			w.Service = DefaultWebhookService
		}
		if w.Configuration == "" {
			w.Configuration = DefaultWebhookConfiguration
		}
		if w.TTL <= 0 {
			w.TTL = DefaultWebhookTTL
		}
		o.Webhook = &w
	}
	return o
}

// requester is the user name the API server gives the daemon's
// service account, which a CSR's spec.username must be.
func (o Options) requester() string {
	return "system:serviceaccount:" + o.Namespace + ":" + o.ServiceAccount
}

// RESTConfig is the client configuration from a kubeconfig file, or the
// in-cluster one when kubeconfig is empty, with the rate limit set to
// qps and burst (see DefaultQPS for why not client-go's 5).
func RESTConfig(kubeconfig string, qps float32, burst int) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cfg.QPS, cfg.Burst = qps, burst
	cfg.UserAgent = "meshless-signer"
	return cfg, nil
}

// lifetime is the certificate lifetime granted for a CSR's
// spec.expirationSeconds.
func lifetime(expirationSeconds *int32) time.Duration {
	if expirationSeconds == nil {
		return MaxTTL
	}
	return min(max(time.Duration(*expirationSeconds)*time.Second, MinTTL), MaxTTL)
}
