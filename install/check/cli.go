package check

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"k8s.io/client-go/kubernetes"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/install/cni"
	"github.com/meshless/meshless/internal/redirect"
)

// FailedError is Main's error when checks failed; the report already said
// which and what to do.
type FailedError struct{ N int }

func (e *FailedError) Error() string { return fmt.Sprintf("%d check(s) failed", e.N) }

// Main runs `meshlessctl check` with args (without the command name): the
// node checks, then the cluster checks, one line each on stdout. It
// returns a *FailedError when any check failed.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		node      = fs.Bool("node", true, "run the node checks (kernel, CNI, daemon)")
		cluster   = fs.Bool("cluster", true, "run the cluster checks (skipped when no cluster is configured)")
		confDir   = fs.String("cni-conf-dir", cni.DefaultConfDir, "host CNI conf dir")
		binDir    = fs.String("cni-bin-dir", cni.DefaultBinDir, "host CNI bin dir")
		socket    = fs.String("socket", "", "daemon's unix socket (default: the conflist's daemonSocket, else "+defaultSocket+")")
		adminAddr = fs.String("admin-addr", DefaultAdminAddr, "daemon's admin address (empty: skip)")
		mode      = fs.String("redirect", "", "redirect backend to probe: auto, iptables or nftables (default: the conflist's, else auto)")
		kubecfg   = fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
		namespace = fs.String("namespace", certclient.DefaultNamespace, "Meshless's namespace")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: meshlessctl check [flags]\n\n"+
			"Preflight of this node and of the cluster: one line per check, OK or what\n"+
			"to fix; exits 1 when a check fails. Run as root on the node.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var checks []Check
	if *node {
		checks = append(checks, NodeChecks(NodeOptions{
			ConfDir: *confDir, BinDir: *binDir, Socket: *socket,
			AdminAddr: *adminAddr, Redirect: redirect.Mode(*mode),
		})...)
	}
	if *cluster {
		checks = append(checks, clusterChecks(*kubecfg, *namespace)...)
	}
	rs := Run(ctx, checks, stdout)
	n := Failed(rs)
	if n > 0 {
		fmt.Fprintf(stdout, "\n%d of %d checks failed\n", n, len(rs))
		return &FailedError{N: n}
	}
	fmt.Fprintf(stdout, "\nno check failed (%d run)\n", len(rs))
	return nil
}

// clusterChecks builds the cluster's checks, or the line that says why
// there are none.
func clusterChecks(kubeconfig, namespace string) []Check {
	cfg, from, err := RESTConfig(kubeconfig)
	if errors.Is(err, ErrNoCluster) {
		return SkippedCluster()
	}
	if err == nil {
		var cs *kubernetes.Clientset
		if cs, err = kubernetes.NewForConfig(cfg); err == nil {
			return ClusterChecks(cs, namespace, from)
		}
	}
	return []Check{{"cluster", func(context.Context) Result {
		return fail("pass a readable kubeconfig with --kubeconfig", "%v", err)
	}}}
}
