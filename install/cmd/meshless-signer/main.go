// Command meshless-signer is the Meshless Kubernetes signer: it approves
// and signs the node daemons' CertificateSigningRequests (signer name
// meshless.io/node) with the CA of a Secret, and publishes the CA's
// trust bundle in a ConfigMap. It also serves the admission webhook that
// gives the pods of a Meshlet their /meshlet (install/webhook), with a
// certificate of that CA. It runs as its own Deployment
// (install/kubernetes/signer.yaml, webhook.yaml); see install/signer and
// docs/security.md.
//
//	meshless-signer [--namespace meshless-system] [--service-account meshless] [--kubeconfig FILE]
//	                [--webhook-addr :9443] [--webhook-config meshless]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/install/signer"
)

// Version is set at build time (-ldflags -X main.Version=...).
var Version = "dev"

// config is the command line.
type config struct {
	kubeconfig  string
	adminAddr   string
	webhookAddr string
	trustDomain string
	qps         float64
	burst       int
	logLevel    slog.Level
	opts        signer.Options
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err == nil {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		err = run(ctx, cfg)
		stop()
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "meshless-signer:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("meshless-signer", flag.ContinueOnError)
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig `file` (in-cluster when empty)")
	fs.StringVar(&c.opts.Namespace, "namespace", certclient.DefaultNamespace, "namespace of the daemon's pods, the CA secret and the bundle configmap")
	fs.StringVar(&c.opts.ServiceAccount, "service-account", certclient.DefaultServiceAccount, "the node daemon's service account, the only requester approved")
	fs.StringVar(&c.opts.CASecret, "ca-secret", signer.DefaultCASecret, "secret holding the CA (keys ca.crt, ca.key)")
	fs.StringVar(&c.opts.BundleConfigMap, "bundle-configmap", certclient.DefaultBundleConfigMap, "configmap the trust bundle is published in (key ca.crt)")
	fs.StringVar(&c.trustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain of the node identities")
	fs.IntVar(&c.opts.Workers, "workers", signer.DefaultWorkers, "CSRs handled in parallel")
	fs.Float64Var(&c.qps, "qps", signer.DefaultQPS, "API requests per second (client-go's default 5 would cap issuance near 1.7 certificates/s)")
	fs.IntVar(&c.burst, "burst", signer.DefaultBurst, "API request burst")
	fs.StringVar(&c.adminAddr, "admin-addr", ":15020", "address of /healthz, /readyz, /metrics (empty: none)")
	fs.StringVar(&c.webhookAddr, "webhook-addr", ":9443", "HTTPS address of the admission webhook that gives the pods of a Meshlet their /meshlet (empty: none)")
	var hook signer.WebhookOptions
	fs.StringVar(&hook.Service, "webhook-service", signer.DefaultWebhookService, "the webhook's Service in --namespace: its DNS name is the serving certificate's SAN")
	fs.StringVar(&hook.Configuration, "webhook-config", signer.DefaultWebhookConfiguration, "MutatingWebhookConfiguration whose caBundle the signer keeps current (empty: the operator sets it)")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *version {
		fmt.Println("meshless-signer", Version)
		return c, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	td, err := identity.ParseTrustDomain(c.trustDomain)
	if err != nil {
		return c, err
	}
	c.opts.TrustDomain = td
	if c.webhookAddr != "" {
		hook.ManualCABundle = hook.Configuration == ""
		c.opts.Webhook = &hook
	}
	c.opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: c.logLevel}))
	return c, nil
}

// run runs the signer, its admin server and its webhook server until
// ctx is done, or one of them fails.
func run(ctx context.Context, c config) error {
	restCfg, err := signer.RESTConfig(c.kubeconfig, float32(c.qps), c.burst)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	s, err := signer.New(cs, c.opts)
	if err != nil {
		return err
	}
	if c.adminAddr != "" {
		// Listen here, so that a taken port fails the start.
		ln, err := net.Listen("tcp", c.adminAddr)
		if err != nil {
			return fmt.Errorf("admin server: %w", err)
		}
		srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
		defer srv.Close()
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				c.opts.Logger.Error("admin server stopped", "err", err)
			}
		}()
	}
	g, ctx := errgroup.WithContext(ctx)
	if c.webhookAddr != "" {
		ln, err := net.Listen("tcp", c.webhookAddr)
		if err != nil {
			return fmt.Errorf("webhook server: %w", err)
		}
		g.Go(func() error { return s.ServeWebhook(ctx, ln) })
	}
	c.opts.Logger.Info("meshless-signer starting", "version", Version, "qps", c.qps, "burst", c.burst)
	g.Go(func() error { return s.Run(ctx) })
	return g.Wait()
}
