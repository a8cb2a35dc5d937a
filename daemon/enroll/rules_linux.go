package enroll

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/meshless/meshless/internal/redirect"
)

// RedirectRules writes the plugin's rules (package redirect) inside a
// netns. The backend is chosen per call in the daemon's netns, which on a
// node is the host's: auto detection looks at what the host uses, as the
// plugin does.
type RedirectRules struct {
	Mode redirect.Mode
}

// Apply implements Rules.
func (r RedirectRules) Apply(path string, spec redirect.Spec) (string, error) {
	b, err := redirect.New(r.Mode)
	if err != nil {
		return "", fmt.Errorf("redirect backend: %w", err)
	}
	n, err := ns.GetNS(path)
	if err != nil {
		return "", fmt.Errorf("open netns: %w", err)
	}
	defer n.Close()
	if err := n.Do(func(ns.NetNS) error { return b.Apply(spec) }); err != nil {
		return "", fmt.Errorf("%s: %w", b.Name(), err)
	}
	return b.Name(), nil
}

// Remove implements Rules.
func (r RedirectRules) Remove(path string) error {
	b, err := redirect.New(r.Mode)
	if err != nil {
		return fmt.Errorf("redirect backend: %w", err)
	}
	n, err := ns.GetNS(path)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer n.Close()
	return n.Do(func(ns.NetNS) error { return b.Remove() })
}
