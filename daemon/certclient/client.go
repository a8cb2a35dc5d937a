package certclient

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/internal/watchone"
)

// Defaults of Options.
const (
	// DefaultTimeout is how long one CSR may wait for its certificate.
	// The signer answers in milliseconds; a CSR still pending after this
	// is abandoned (and deleted) and a new one made after a backoff.
	DefaultTimeout = 30 * time.Second
	// DefaultRetryMax caps the backoff between failed attempts (1 s,
	// 2 s, 4 s, ... 60 s), Istio's retry interval: quick while a node
	// has no certificate yet, and at most one CSR a minute per node
	// when the signer is down, so a cluster of thousands of nodes does
	// not flood it when it comes back.
	DefaultRetryMax = 60 * time.Second
	// firstRetry is the first backoff.
	firstRetry = time.Second
)

// Options configure a Client.
type Options struct {
	// Node is this node's name (the node of the daemon's pod); required.
	Node string
	// Namespace of the bundle ConfigMap; DefaultNamespace when empty.
	Namespace string
	// BundleConfigMap is the trust bundle's ConfigMap;
	// DefaultBundleConfigMap when empty.
	BundleConfigMap string
	// ExpirationSeconds is the lifetime asked for;
	// DefaultExpirationSeconds when zero. The signer clamps it.
	ExpirationSeconds int32
	// Timeout of one CSR; DefaultTimeout when zero.
	Timeout time.Duration
	// RetryMax caps the backoff after failures; DefaultRetryMax when
	// zero.
	RetryMax time.Duration
	// Clock drives renewal, backoff and timeouts; the real clock when
	// nil. Tests pass a fake one, and the same clock's Now to the
	// Source, which validates material by it.
	Clock clock.Clock
	// Logger; slog.Default when nil.
	Logger *slog.Logger
}

// Client keeps a node's certificate from the Kubernetes signer in an
// identity.Source: it requests one at start and renews it at half its
// life. See the package documentation.
type Client struct {
	api                  api
	src                  *identity.Source
	node                 string
	namespace, configMap string
	expiration           int32
	timeout, retryMax    time.Duration
	clock                clock.Clock
	log                  *slog.Logger

	ready     chan struct{}
	readyOnce sync.Once
	renewNow  chan struct{} // the bundle no longer trusts our chain

	mu     sync.Mutex          // serializes installs of material
	held   *held               // what is in the Source, nil before the first
	latest []*x509.Certificate // the newest bundle the watch saw
}

// held is the chain and key in use, kept to pair them with a new bundle.
type held struct {
	chain  []*x509.Certificate
	key    crypto.Signer
	bundle []*x509.Certificate
}

// New makes a Client that asks with cfg (in a pod: rest.InClusterConfig,
// whose token is bound to the pod, so that the API server records the
// pod and its node in every CSR) and puts the material into src. src's
// trust domain is the certificates'.
func New(cfg *rest.Config, src *identity.Source, opts Options) (*Client, error) {
	if cfg == nil {
		return nil, errors.New("certclient: no rest config")
	}
	opts = opts.withDefaults()
	a, err := newRESTAPI(cfg, opts.Namespace, opts.BundleConfigMap)
	if err != nil {
		return nil, fmt.Errorf("certclient: %w", err)
	}
	return newClient(a, src, opts)
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.BundleConfigMap == "" {
		o.BundleConfigMap = DefaultBundleConfigMap
	}
	if o.ExpirationSeconds == 0 {
		o.ExpirationSeconds = DefaultExpirationSeconds
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func newClient(a api, src *identity.Source, opts Options) (*Client, error) {
	opts = opts.withDefaults()
	if src == nil {
		return nil, errors.New("certclient: no identity source")
	}
	if opts.Node == "" {
		return nil, errors.New("certclient: no node name")
	}
	return &Client{
		api: a, src: src, node: opts.Node,
		namespace: opts.Namespace, configMap: opts.BundleConfigMap,
		expiration: opts.ExpirationSeconds,
		timeout:    opts.Timeout, retryMax: opts.RetryMax,
		clock: opts.Clock,
		log:   opts.Logger.With("component", "certclient", "node", opts.Node),
		ready: make(chan struct{}), renewNow: make(chan struct{}, 1),
	}, nil
}

// Ready is closed once the first certificate is in the Source.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Run gets a certificate, puts it into the Source, and renews it at its
// RenewAt (half its life) until ctx is done; it follows the trust bundle
// meanwhile (see followBundle). A failed attempt is logged and retried
// with backoff (1 s doubling to RetryMax); the material in use stays
// until a new one is in place. It returns nil when ctx is done.
func (c *Client) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { c.followBundle(ctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	backoff := time.Duration(0)
	for {
		m, key, err := c.request(ctx)
		if err == nil {
			err = c.install(m, key)
		}
		var wait time.Duration
		if err == nil {
			backoff = 0
			c.readyOnce.Do(func() { close(c.ready) })
			wait = m.RenewAt().Sub(c.clock.Now())
		} else {
			if ctx.Err() != nil {
				return nil
			}
			backoff = min(max(2*backoff, firstRetry), c.retryMax)
			wait = backoff
			c.log.Error("node certificate not obtained; keeping the one in use", "err", err, "retryIn", backoff,
				"current", c.src.Expiry())
		}
		if !c.sleep(ctx, wait) {
			return nil
		}
	}
}

// sleep waits d on the client's clock, or less when the bundle asks for
// a renewal; false when ctx is done.
func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
	case <-c.renewNow:
		c.log.Info("renewing now: the trust bundle no longer trusts the certificate in use")
	}
	return true
}

// install puts m into the Source and remembers its chain and key. If the
// bundle watch has meanwhile seen a newer bundle than the one m was
// built with, the chain is paired with that one at once.
func (c *Client) install(m *identity.Material, key crypto.Signer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A renewal asked for before this one is answered by this one.
	select {
	case <-c.renewNow:
	default:
	}
	if err := c.src.Set(m); err != nil {
		return err
	}
	c.held = &held{chain: m.Chain(), key: key, bundle: m.Bundle()}
	c.rebundleLocked()
	return nil
}

// followBundle watches the trust bundle ConfigMap until ctx is done and
// pairs the certificate in use with every new bundle, so that a root the
// signer adds (the first step of a CA rotation) is trusted within
// seconds, not at the next renewal. If the certificate in use does not
// lead to a root of the new bundle (its root was dropped before this node
// renewed), the new material is refused, the old one stays, and Run
// renews at once. A deleted or unparsable ConfigMap is logged and
// ignored: the bundle in use stays.
func (c *Client) followBundle(ctx context.Context) {
	_ = watchone.Run(ctx, c.api.bundle(), func(cm *corev1.ConfigMap, exists bool) bool {
		if !exists {
			c.log.Warn("trust bundle configmap missing; keeping the bundle in use", "configmap", c.namespace+"/"+c.configMap)
			return false
		}
		bundle, err := c.parseBundle(cm)
		if err != nil {
			c.log.Error("trust bundle unusable; keeping the bundle in use", "err", err)
			return false
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.latest = bundle
		c.rebundleLocked()
		return false
	}, c.log)
}

// rebundleLocked pairs the held chain and key with the latest bundle, if
// it differs from the one in use. c.mu is held.
func (c *Client) rebundleLocked() {
	if c.held == nil || c.latest == nil || sameCerts(c.held.bundle, c.latest) {
		return
	}
	m, err := identity.NewMaterial(c.latest, c.held.chain, c.held.key)
	if err == nil {
		err = c.src.Set(m)
	}
	if err != nil {
		c.log.Warn("new trust bundle does not fit the certificate in use; renewing", "err", err)
		select {
		case c.renewNow <- struct{}{}:
		default:
		}
		return
	}
	c.log.Info("trust bundle updated", "roots", len(c.latest))
	c.held.bundle = c.latest
}

// sameCerts reports whether a and b hold the same certificates in the
// same order.
func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}
