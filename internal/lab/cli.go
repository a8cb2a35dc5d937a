package lab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// ExitError carries the exit code of the program `lab exec` ran, for the
// caller to exit with.
type ExitError struct {
	// Code is the program's exit status (128+signal when killed).
	Code int
}

// Error says how the program ended.
func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ExitCode returns Code.
func (e *ExitError) ExitCode() int { return e.Code }

// Usage is the help text of `meshlessctl lab`.
const Usage = `usage: meshlessctl lab <command> [flags]

  up     [--name ml] [--nodes 2] [--pods 2] [--bin-dir DIR] [--cni-bin-dir DIR] [--keep-on-error]
         build the lab: netns nodes on an underlay, one meshlessd per node,
         pods wired by bridge + host-local + meshless-cni through libcni
  status [--name ml]
         nodes, pods, IPs, daemons and their /readyz
  exec   [--name ml] NODE/POD -- CMD [ARG...]
         run CMD inside the pod's netns (e.g. n1/p2), exiting with its status
  down   [--name ml]
         remove everything the lab made, also after a crash; idempotent
`

// Main runs `meshlessctl lab` with args (after "lab"). A failed `exec`
// returns an *ExitError holding the program's status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, Usage)
		if len(args) == 0 {
			return errors.New("missing command")
		}
		return nil
	}
	fs := flag.NewFlagSet("lab "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", DefaultName, "lab `prefix` of every netns and of the lab folder")
	root := fs.String("root", DefaultRoot, "`folder` holding the labs' folders")
	switch args[0] {
	case "up":
		o := Options{Log: stdout}
		fs.IntVar(&o.Nodes, "nodes", 2, "number of nodes")
		fs.IntVar(&o.Pods, "pods", 2, "pods per node")
		fs.StringVar(&o.BinDir, "bin-dir", "", "`folder` of meshlessd and meshless-cni (default: this program's folder)")
		fs.StringVar(&o.CNIBinDir, "cni-bin-dir", "", "`folder` of bridge, host-local, loopback (default: .cache/cni/bin next to bin-dir, else /opt/cni/bin)")
		fs.BoolVar(&o.KeepOnError, "keep-on-error", false, "leave a failed lab in place for inspection")
		if err := parse(fs, args[1:], 0); err != nil {
			return err
		}
		o.Name, o.Root = *name, *root
		l, err := Up(ctx, o)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout)
		return l.Status(ctx).Print(stdout)
	case "status":
		if err := parse(fs, args[1:], 0); err != nil {
			return err
		}
		l, err := Open(*name, *root)
		if err != nil {
			return err
		}
		s := l.Status(ctx)
		if err := s.Print(stdout); err != nil {
			return err
		}
		if !s.Healthy() {
			return fmt.Errorf("lab %s is not healthy", *name)
		}
		return nil
	case "down":
		if err := parse(fs, args[1:], 0); err != nil {
			return err
		}
		return Down(ctx, *name, *root, stdout)
	case "exec":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		rest := fs.Args()
		if len(rest) >= 2 && rest[1] == "--" {
			rest = append(rest[:1:1], rest[2:]...)
		}
		if len(rest) < 2 {
			return errors.New("usage: lab exec [--name ml] NODE/POD -- CMD [ARG...]")
		}
		l, err := Open(*name, *root)
		if err != nil {
			return err
		}
		return runExec(ctx, l, rest[0], rest[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, Usage)
	return fmt.Errorf("unknown lab command %q", args[0])
}

// parse parses flags and rejects extra arguments beyond nargs.
func parse(fs *flag.FlagSet, args []string, nargs int) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > nargs {
		return fmt.Errorf("unexpected arguments %q", fs.Args()[nargs:])
	}
	return nil
}

// runExec runs argv in the pod's netns with this process's stdin and the
// given stdout and stderr, turning its exit status into an *ExitError.
func runExec(ctx context.Context, l *Lab, ref string, argv []string, stdout, stderr io.Writer) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	err := l.Run(ref, cmd)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return &ExitError{Code: code}
	}
	return err
}
