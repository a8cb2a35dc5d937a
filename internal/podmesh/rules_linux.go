package podmesh

import (
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/meshless/meshless/internal/redirect"
)

// Redirect is Rules through package redirect. The backend is chosen per
// call in the caller's netns, which on a node is the host's: auto
// detection looks at what the host uses.
type Redirect struct {
	Mode redirect.Mode
}

var _ Rules = Redirect{}

// Apply implements Rules.
func (r Redirect) Apply(path string, spec redirect.Spec) (string, error) {
	b, err := redirect.New(r.Mode)
	if err != nil {
		return "", fmt.Errorf("redirect backend: %w", err)
	}
	n, err := ns.GetNS(path)
	if err != nil {
		return "", fmt.Errorf("open pod netns: %w", err)
	}
	defer n.Close()
	if err := n.Do(func(ns.NetNS) error { return b.Apply(spec) }); err != nil {
		return "", fmt.Errorf("%s: %w", b.Name(), err)
	}
	return b.Name(), nil
}

// Check reports whether spec's rules are in place in the netns at path.
func (r Redirect) Check(path string, spec redirect.Spec) error {
	b, err := redirect.New(r.Mode)
	if err != nil {
		return fmt.Errorf("redirect backend: %w", err)
	}
	n, err := ns.GetNS(path)
	if err != nil {
		return fmt.Errorf("open pod netns: %w", err)
	}
	defer n.Close()
	if err := n.Do(func(ns.NetNS) error { return b.Check(spec) }); err != nil {
		return fmt.Errorf("check redirection rules: %w", err)
	}
	return nil
}

// Remove implements Rules. A netns that is already gone has no rules left
// to remove, which is success.
func (r Redirect) Remove(path string) error {
	n, err := ns.GetNS(path)
	if err != nil {
		var nx ns.NSPathNotExistErr
		var nn ns.NSPathNotNSErr
		if errors.As(err, &nx) || errors.As(err, &nn) {
			return nil
		}
		return fmt.Errorf("open pod netns: %w", err)
	}
	defer n.Close()
	b, err := redirect.New(r.Mode)
	if err != nil {
		return fmt.Errorf("redirect backend: %w", err)
	}
	if err := n.Do(func(ns.NetNS) error { return b.Remove() }); err != nil {
		return fmt.Errorf("remove redirection rules: %w", err)
	}
	return nil
}
