package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// delTimeout bounds one pod's CNI DEL: a dead daemon must not stall Down.
const delTimeout = 15 * time.Second

// Down removes everything lab l made. See the package function Down.
func (l *Lab) Down(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return down(ctx, l.st.Name, filepath.Dir(l.st.Dir), l.st, l.log)
}

// Down removes everything the lab called name (under root, DefaultRoot when
// empty) made: CNI DEL of every pod (best effort), its daemons, its netns
// and its folder. What exists is read from lab.json and from the netns
// named after the lab, so Down works after a crash or a half-finished Up;
// on a lab that does not exist it does nothing. log, if not nil, gets one
// line per removed resource.
func Down(ctx context.Context, name, root string, log io.Writer) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if root == "" {
		root = DefaultRoot
	}
	st, err := loadState(labDir(root, name))
	if err != nil && log != nil {
		fmt.Fprintf(log, "ignoring unreadable state: %v\n", err)
	}
	return down(ctx, name, root, st, log)
}

func down(ctx context.Context, name, root string, st *State, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	var errs []error
	if st != nil {
		delPods(ctx, st, log)
	}
	present, err := labNetns(name)
	if err != nil {
		errs = append(errs, err)
	}

	// Daemons: recorded PIDs, then any meshlessd left in a node netns
	// (a crash between start and recording the PID).
	var pids []int
	if st != nil {
		for _, n := range st.Nodes {
			if isLabDaemon(n.PID, n) {
				pids = append(pids, n.PID)
			}
		}
	}
	for _, ns := range present {
		for _, pid := range daemonsInNetns(ns) {
			if !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	for _, pid := range pids {
		if err := stopPID(pid); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(log, "stopped meshlessd pid %d\n", pid)
		}
	}

	// Netns: pods, nodes, underlay; deleting them deletes their links.
	for _, ns := range present {
		if err := deleteNetns(ns); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(log, "deleted netns %s\n", ns)
		}
	}

	dir := labDir(root, name)
	if st == nil && len(present) == 0 && len(pids) == 0 && !fileExists(dir) {
		fmt.Fprintf(log, "lab %s: nothing to remove\n", name)
	}
	if fileExists(dir) {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove lab dir: %w", err))
		} else {
			fmt.Fprintf(log, "removed %s\n", dir)
		}
	}
	os.Remove(root) // only if no other lab is left in it
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab down %s: %w", name, err)
	}
	return nil
}

// delPods runs CNI DEL for every pod of the state whose node netns still
// exists, reporting failures but not failing: the netns are deleted anyway.
func delPods(ctx context.Context, st *State, log io.Writer) {
	if !fileExists(st.CNIBinDir) {
		return
	}
	for _, n := range st.Nodes {
		if len(n.Pods) == 0 || !netnsExists(n.Netns) {
			continue
		}
		chain, err := st.nodeChain(n)
		if err != nil {
			fmt.Fprintf(log, "cni del on %s skipped: %v\n", n.Name, err)
			continue
		}
		for _, p := range n.Pods {
			dctx, cancel := context.WithTimeout(ctx, delTimeout)
			err := chain.Teardown(dctx, p.sandbox())
			cancel()
			if err != nil {
				fmt.Fprintf(log, "cni del %s/%s (best effort): %v\n", n.Name, p.Name, err)
				continue
			}
			fmt.Fprintf(log, "cni del %s/%s\n", n.Name, p.Name)
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
