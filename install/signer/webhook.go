package signer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshless/meshless/install/webhook"
)

// errNoWebhook: ServeWebhook without Options.Webhook.
var errNoWebhook = errors.New("signer: webhook not configured (Options.Webhook)")

// ServeWebhook serves the admission webhook (install/webhook, at
// webhook.Path) on ln, over HTTPS with the serving certificate that Run
// issues and renews, until ctx is done; then it stops, giving calls in
// flight 5 s, and returns nil. It needs Options.Webhook, and Run: until
// Run has loaded a CA, handshakes fail (and Ready is false).
func (s *Signer) ServeWebhook(ctx context.Context, ln net.Listener) error {
	if s.webhook == nil {
		ln.Close()
		return errNoWebhook
	}
	mux := http.NewServeMux()
	mux.Handle(webhook.Path, s.hook)
	srv := &http.Server{
		Handler: mux,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: s.webhook.getCertificate,
		},
		// The API server gives a call timeoutSeconds (5 in webhook.yaml)
		// and sends one review per connection or reuses it; these only
		// bound what a client that is not the API server can hold.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// Failed handshakes (an API server with a stale caBundle, a
		// scanner) are worth seeing, not at error level.
		ErrorLog: slog.NewLogLogger(s.opts.Logger.With("server", "webhook").Handler(), slog.LevelWarn),
	}
	s.opts.Logger.Info("webhook serving", "addr", ln.Addr().String(), "path", webhook.Path, "dnsName", s.webhook.dnsName)
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("webhook server: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		<-errc
		return nil
	}
}

// Timing of the webhook's certificate and caBundle.
const (
	// webhookResync: the caBundle is compared with the CA this often and
	// rewritten if someone changed it or recreated the configuration.
	// The signer may not watch the configuration (get and update only),
	// and a GET a minute is nothing.
	webhookResync = time.Minute
	// bundleOverlap is how long the caBundle keeps the previous CA's
	// roots after the serving certificate changed CA: the API server
	// sees a new caBundle within a second or so, but a call it began
	// with the old one must still verify.
	bundleOverlap = 5 * time.Minute
	// keepOldCertFor: while the caBundle cannot be written, a serving
	// certificate of the previous CA (which the API server trusts) is
	// kept over one of the new CA (which it may not) as long as it has
	// this much life left.
	keepOldCertFor = 10 * time.Minute
)

// webhookCert issues the webhook's serving certificate from the CA in
// use, renews it at half its life and whenever the CA changes, and keeps
// the caBundle of the MutatingWebhookConfiguration to the roots that
// verify it. Its loop is the only writer of its fields but cert.
type webhookCert struct {
	cs      kubernetes.Interface
	opts    WebhookOptions
	dnsName string
	ca      func() *authority
	now     func() time.Time
	log     *slog.Logger
	cert    atomic.Pointer[tls.Certificate]
	wakeup  chan struct{} // cap 1: a new CA is in use

	issuer    *authority          // of cert
	prev      []*x509.Certificate // roots of the CA before issuer
	prevUntil time.Time           // prev stays in the caBundle until then
	backoff   time.Duration       // of failed writes
	lastErr   string              // logged once
}

func newWebhookCert(cs kubernetes.Interface, opts Options, ca func() *authority) *webhookCert {
	return &webhookCert{
		cs: cs, opts: *opts.Webhook, dnsName: opts.Webhook.dnsName(opts.Namespace),
		ca: ca, now: opts.Now, log: opts.Logger, wakeup: make(chan struct{}, 1),
	}
}

// wake makes the loop look at the CA now.
func (w *webhookCert) wake() {
	select {
	case w.wakeup <- struct{}{}:
	default:
	}
}

// getCertificate is the server's tls.Config.GetCertificate.
func (w *webhookCert) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := w.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no serving certificate yet: no CA loaded")
}

// run keeps the certificate and the caBundle current until ctx is done.
func (w *webhookCert) run(ctx context.Context) {
	for {
		t := time.NewTimer(w.sync(ctx))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.wakeup:
		case <-t.C:
		}
		t.Stop()
	}
}

// sync brings the caBundle and the certificate in line with the CA in
// use, in that order (the API server must trust a certificate before it
// is served), and returns when to look again.
func (w *webhookCert) sync(ctx context.Context) time.Duration {
	a := w.ca()
	if a == nil {
		return webhookResync // wake comes with the CA
	}
	now := w.now()
	cur := w.cert.Load()
	switching := cur != nil && w.issuer != a
	var keep []*x509.Certificate // roots the caBundle must keep besides a's
	if switching {
		keep = w.issuer.Bundle()
	} else if now.Before(w.prevUntil) {
		keep = w.prev
	}
	err := w.publish(ctx, union(a.Bundle(), keep))
	if err != nil && switching && cur.Leaf.NotAfter.Sub(now) > keepOldCertFor {
		w.report(err)
		return w.backoff
	}
	if cur == nil || switching || !now.Before(renewAt(cur.Leaf)) {
		c, ierr := a.issueServing(w.dnsName, w.opts.TTL, now)
		if ierr != nil {
			w.report(errors.Join(err, ierr))
			return w.backoff
		}
		w.cert.Store(c)
		if switching {
			w.prev, w.prevUntil = keep, now.Add(bundleOverlap)
		}
		w.issuer = a
		w.log.Info("webhook serving certificate issued", "dnsName", w.dnsName, "signer", a.Certificate().Subject.CommonName,
			"notAfter", c.Leaf.NotAfter.UTC())
	}
	w.report(err)
	next := min(webhookResync, renewAt(w.cert.Load().Leaf).Sub(now))
	if now.Before(w.prevUntil) {
		next = min(next, w.prevUntil.Sub(now))
	}
	if err != nil {
		next = min(next, w.backoff)
	}
	return max(next, time.Second)
}

// report logs a failure once per distinct error and sets the backoff of
// the retries (1 s doubling to a minute); a success ends both.
func (w *webhookCert) report(err error) {
	if err == nil {
		if w.lastErr != "" {
			w.log.Info("webhook caBundle and certificate in order again", "configuration", w.opts.Configuration)
		}
		w.lastErr, w.backoff = "", 0
		return
	}
	w.backoff = min(max(2*w.backoff, time.Second), time.Minute)
	if msg := err.Error(); msg != w.lastErr {
		w.lastErr = msg
		hint := ""
		if apierrors.IsNotFound(err) {
			hint = "apply install/kubernetes/webhook.yaml"
		}
		w.log.Error("webhook caBundle or certificate not updated; retrying", "configuration", w.opts.Configuration,
			"err", err, "hint", hint, "retryIn", w.backoff)
	}
}

// publish sets the caBundle of every webhook of the configuration to
// roots, unless it is so already or the operator keeps it.
func (w *webhookCert) publish(ctx context.Context, roots []*x509.Certificate) error {
	if w.opts.ManualCABundle {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	bundle := encodeCerts(roots)
	cfgs := w.cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := cfgs.Get(ctx, w.opts.Configuration, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get mutatingwebhookconfiguration %s: %w", w.opts.Configuration, err)
	}
	changed := false
	for i := range cfg.Webhooks {
		if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, bundle) {
			cfg.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if _, err := cfgs.Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update mutatingwebhookconfiguration %s: %w", w.opts.Configuration, err)
	}
	w.log.Info("webhook caBundle updated", "configuration", w.opts.Configuration, "webhooks", len(cfg.Webhooks), "roots", len(roots))
	return nil
}

// renewAt is half-way through the certificate's life.
func renewAt(leaf *x509.Certificate) time.Time {
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
}

// union is a followed by the certificates of b not in a.
func union(a, b []*x509.Certificate) []*x509.Certificate {
	out := append([]*x509.Certificate(nil), a...)
	for _, c := range b {
		dup := false
		for _, o := range out {
			dup = dup || o.Equal(c)
		}
		if !dup {
			out = append(out, c)
		}
	}
	return out
}
