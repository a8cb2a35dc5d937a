package plugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/redirect"
)

// selectBackend returns the rule backend for mode. It runs in the host
// netns, where auto detection looks at what the host already uses.
func selectBackend(mode redirect.Mode) (redirect.Backend, error) {
	b, err := redirect.New(mode)
	if err != nil {
		return nil, fmt.Errorf("redirect backend: %w", err)
	}
	return b, nil
}

// specFor is the rule spec for a registered pod (shared with the daemon's
// enrollment of running pods).
func specFor(p *cniapi.Pod) redirect.Spec { return redirect.SpecFor(p) }

// removeRules deletes the pod's rules. A netns that is already gone has no
// rules left to remove, which is success.
func removeRules(mode redirect.Mode, netnsPath string) error {
	netns, err := ns.GetNS(netnsPath)
	if err != nil {
		var nx ns.NSPathNotExistErr
		var nn ns.NSPathNotNSErr
		if errors.As(err, &nx) || errors.As(err, &nn) {
			return nil
		}
		return fmt.Errorf("open pod netns: %w", err)
	}
	defer netns.Close()
	b, err := selectBackend(mode)
	if err != nil {
		return err
	}
	if err := netns.Do(func(ns.NetNS) error { return b.Remove() }); err != nil {
		return fmt.Errorf("remove redirection rules: %w", err)
	}
	return nil
}
