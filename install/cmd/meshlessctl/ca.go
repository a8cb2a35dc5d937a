package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/meshless/meshless/daemon/identity"
)

func init() {
	commands["ca"] = command{"make a CA and issue nodes' TLS material for the tunnel (init|issue)", runCA}
}

const caUsage = `usage:
  meshlessctl ca init DIR [--ttl 87600h]
  meshlessctl ca issue --ca DIR --node NAME --out DIR2 [--ttl 24h] [--trust-domain cluster.local]`

// runCA dispatches the ca subcommands; the work is in daemon/identity.
func runCA(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(caUsage)
	}
	switch args[0] {
	case "init":
		return runCAInit(args[1:], stdout)
	case "issue":
		return runCAIssue(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, caUsage)
		return nil
	}
	return fmt.Errorf("unknown subcommand %q\n%s", args[0], caUsage)
}

// runCAInit writes a new CA to DIR and refuses to overwrite one.
func runCAInit(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ca init", flag.ContinueOnError)
	ttl := fs.Duration("ttl", identity.DefaultCATTL, "lifetime of the CA certificate")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("want one directory\n%s", caUsage)
	}
	ca, err := identity.InitCA(pos[0], identity.CAOptions{TTL: *ttl})
	if err != nil {
		return err
	}
	c := ca.Certificate()
	fmt.Fprintf(stdout, "CA %q written to %s: %s, %s (keep the key off the nodes)\nvalid until %s\n",
		c.Subject.CommonName, pos[0], identity.CACertFile, identity.CAKeyFile, c.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// runCAIssue writes a node's TLS material, signed by the CA in --ca.
func runCAIssue(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ca issue", flag.ContinueOnError)
	caDir := fs.String("ca", "", "CA directory (from ca init)")
	node := fs.String("node", "", "node name, as meshlessd --node-name")
	out := fs.String("out", "", "directory to write ca.crt, tls.crt and tls.key to (meshlessd --tls-dir)")
	ttl := fs.Duration("ttl", identity.DefaultNodeTTL, "lifetime of the node certificate")
	td := fs.String("trust-domain", identity.DefaultTrustDomain, "trust domain, as meshlessd --trust-domain")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *caDir == "" || *node == "" || *out == "" {
		return fmt.Errorf("want --ca, --node and --out\n%s", caUsage)
	}
	trust, err := identity.ParseTrustDomain(*td)
	if err != nil {
		return err
	}
	m, err := identity.IssueNode(*caDir, *node, *out, identity.IssueOptions{TrustDomain: trust, TTL: *ttl})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s written to %s: %s (%d root(s)), %s, %s\nvalid until %s; renew after %s\n",
		m.ID(), *out, identity.CACertFile, len(m.Bundle()), identity.TLSCertFile, identity.TLSKeyFile,
		m.NotAfter().UTC().Format(time.RFC3339), m.RenewAt().UTC().Format(time.RFC3339))
	if abs, err := filepath.Abs(*out); err == nil {
		fmt.Fprintf(stdout, "run: meshlessd --node-name %s --tls-dir %s\n", *node, abs)
	}
	return nil
}

// parseInterspersed parses flags wherever they are among the positional
// arguments ("ca init DIR --ttl 1h" as well as "ca init --ttl 1h DIR"),
// which the flag package alone stops at the first positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
