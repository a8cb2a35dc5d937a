package signer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

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
