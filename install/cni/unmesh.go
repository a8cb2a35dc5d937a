package cni

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/meshless/meshless/internal/podmesh"
)

// UnmeshPods removes Meshless's redirection rules and routes from every
// network namespace bound in dir (the runtime's /var/run/netns: one bind
// mount per pod sandbox). Once the daemons are gone those rules send the
// pods' connections to listeners that no longer exist; without them the
// pods meshed while Meshless ran keep working, unmeshed. A netns without
// rules of ours is left as it is; a missing dir is no pod at all. It
// returns how many namespaces it went through.
func UnmeshPods(dir string, rules podmesh.Rules, log *slog.Logger) (int, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list pod netns: %w", err)
	}
	var errs []error
	n := 0
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := rules.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		n++
		log.Debug("no meshless rules left", "netns", p)
	}
	return n, errors.Join(errs...)
}
