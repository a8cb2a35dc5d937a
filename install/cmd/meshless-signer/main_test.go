package main

import (
	"context"
	"errors"
	"flag"
	"path/filepath"
	"testing"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/install/signer"
)

func TestParseFlags(t *testing.T) {
	c, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	o := c.opts
	if o.Namespace != certclient.DefaultNamespace || o.ServiceAccount != certclient.DefaultServiceAccount ||
		o.CASecret != signer.DefaultCASecret || o.BundleConfigMap != certclient.DefaultBundleConfigMap ||
		o.TrustDomain.String() != "cluster.local" || c.qps != signer.DefaultQPS || c.burst != signer.DefaultBurst {
		t.Errorf("defaults: %+v", c)
	}
	c, err = parseFlags([]string{"--namespace=mesh", "--service-account=d", "--trust-domain=example.org", "--qps=50"})
	if err != nil || c.opts.Namespace != "mesh" || c.opts.ServiceAccount != "d" || c.opts.TrustDomain.String() != "example.org" || c.qps != 50 {
		t.Errorf("flags: %+v, %v", c, err)
	}
	c, _ = parseFlags(nil)
	if w := c.opts.Webhook; c.webhookAddr != ":9443" || w == nil || w.Service != signer.DefaultWebhookService ||
		w.Configuration != signer.DefaultWebhookConfiguration || w.ManualCABundle {
		t.Errorf("webhook defaults: %q %+v", c.webhookAddr, w)
	}
	c, _ = parseFlags([]string{"--webhook-addr=127.0.0.1:8443", "--webhook-config="})
	if w := c.opts.Webhook; w == nil || !w.ManualCABundle {
		t.Errorf("--webhook-config empty: %+v, want the caBundle left to the operator", w)
	}
	c, _ = parseFlags([]string{"--webhook-addr="})
	if c.opts.Webhook != nil {
		t.Errorf("--webhook-addr empty: webhook %+v, want none", c.opts.Webhook)
	}
	for _, args := range [][]string{{"--trust-domain=spiffe://x"}, {"extra"}, {"--log-level=loud"}} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
	if _, err := parseFlags([]string{"--version"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--version: %v, want flag.ErrHelp (exit 0)", err)
	}
}

func TestRunNeedsAClient(t *testing.T) {
	c, err := parseFlags([]string{"--kubeconfig=" + filepath.Join(t.TempDir(), "missing"), "--admin-addr="})
	if err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), c); err == nil {
		t.Fatal("run without a usable kubeconfig succeeded")
	}
}
