// Package check is `meshlessctl check`: a preflight of a node and of a
// cluster, one line per check, each OK or what to fix.
//
//	results := check.Run(ctx, check.NodeChecks(opts.Node), os.Stdout)
//	if check.Failed(results) { os.Exit(1) }
//
// Node checks (kernel.go, cni.go, daemon.go) run on the node itself, with
// the paths of its CNI runtime and daemon; the kernel checks build a
// scratch network namespace and exercise in it what the plugin and the
// daemon do in a pod's (redirect rules, SO_ORIGINAL_DST, socket marks), so
// a pass means the kernel really does it, not that a module file exists.
// Cluster checks (cluster.go) ask the API server through client-go.
package check

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Status is the outcome of one check.
type Status string

// The outcomes. Only StatusFail makes the run fail: a skipped check could
// not be run (nothing configured to check), an informational one reports
// an optional feature.
const (
	StatusOK   Status = "OK"
	StatusFail Status = "FAIL"
	StatusSkip Status = "SKIP"
	StatusInfo Status = "INFO"
)

// Result is one line of the report.
type Result struct {
	// Name is the check's fixed name, "group: what", e.g. "daemon: socket".
	Name   string
	Status Status
	// Detail says what was found (OK, INFO, SKIP) or what is wrong (FAIL).
	Detail string
	// Fix is the concrete action for a FAIL; empty otherwise.
	Fix string
}

// String is the report line: status, name, detail and, for a failure,
// what to do.
func (r Result) String() string {
	s := fmt.Sprintf("%-4s  %-24s %s", r.Status, r.Name, r.Detail)
	if r.Fix != "" {
		s += "; fix: " + r.Fix
	}
	return s
}

// Check is one named check. Run returns its result; the runner fills in
// the name.
type Check struct {
	Name string
	Run  func(ctx context.Context) Result
}

// perCheck bounds one check, so that a hung socket or API server costs a
// line, not the whole report.
const perCheck = 10 * time.Second

// Run runs the checks in order, writes each line to w as soon as it is
// known, and returns the results.
func Run(ctx context.Context, checks []Check, w io.Writer) []Result {
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, perCheck)
		r := c.Run(cctx)
		cancel()
		r.Name = c.Name
		fmt.Fprintln(w, r)
		out = append(out, r)
	}
	return out
}

// Failed counts the failed results.
func Failed(rs []Result) int {
	n := 0
	for _, r := range rs {
		if r.Status == StatusFail {
			n++
		}
	}
	return n
}

func ok(format string, a ...any) Result {
	return Result{Status: StatusOK, Detail: fmt.Sprintf(format, a...)}
}

func fail(fix, format string, a ...any) Result {
	return Result{Status: StatusFail, Detail: fmt.Sprintf(format, a...), Fix: fix}
}

func skip(format string, a ...any) Result {
	return Result{Status: StatusSkip, Detail: fmt.Sprintf(format, a...)}
}

func info(format string, a ...any) Result {
	return Result{Status: StatusInfo, Detail: fmt.Sprintf(format, a...)}
}
