package cni

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"

	"github.com/containernetworking/cni/libcni"
)

// confExtensions are the extensions the runtime (containerd, CRI-O) loads
// network configs from.
var confExtensions = []string{".conf", ".conflist", ".json"}

// ErrNoConfig means the CNI conf dir holds no valid primary network config
// yet; the primary CNI has not written it.
var ErrNoConfig = errors.New("no valid CNI config")

// candidate is a config file that may be the primary network.
type candidate struct {
	path string
	list bool // .conflist; else a single-plugin .conf or .json
	data []byte
	fi   os.FileInfo
}

// confFiles lists dir's network config files in the runtime's order:
// lexical, as containerd sorts libcni.ConfFiles.
func confFiles(dir string) ([]string, error) {
	files, err := libcni.ConfFiles(dir, confExtensions)
	if err != nil {
		return nil, fmt.Errorf("read cni conf dir: %w", err)
	}
	sort.Strings(files)
	return files, nil
}

// primary returns the first valid network config in the conf dir, the one
// the runtime uses. Invalid files are skipped, and reported once per
// distinct problem at error level. A conflist holding only meshless-cni is
// not a primary network and is skipped too.
func (in *Installer) primary() (*candidate, error) {
	files, err := confFiles(in.cfg.ConfDir)
	if err != nil {
		return nil, err
	}
	problems := map[string]string{}
	defer func() { in.reported = problems }()
	for _, path := range files {
		c, err := loadCandidate(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed since the listing
		}
		if err != nil {
			problems[path] = err.Error()
			if in.reported[path] != err.Error() {
				in.log.Error("skipping invalid CNI config; fix or remove it",
					slog.String("file", path), slog.String("err", err.Error()))
			}
			continue
		}
		return c, nil
	}
	return nil, fmt.Errorf("%w in %s", ErrNoConfig, in.cfg.ConfDir)
}

// loadCandidate reads and checks one config file. Its errors say which file
// and what is wrong with it.
func loadCandidate(path string) (*candidate, error) {
	data, fi, err := readStat(path)
	if err != nil {
		return nil, err
	}
	c := &candidate{path: path, list: filepath.Ext(path) == ".conflist", data: data, fi: fi}
	if c.list {
		cl, err := parseConflist(data)
		if err != nil {
			return nil, fmt.Errorf("conflist %s: %w", path, err)
		}
		if err := validateList(data); err != nil {
			return nil, fmt.Errorf("conflist %s: %w", path, err)
		}
		if !hasOther(cl) {
			return nil, fmt.Errorf("conflist %s: %w", path, errOnlyMeshless)
		}
		return c, nil
	}
	cf, err := parseConf(data)
	if err != nil {
		return nil, fmt.Errorf("conf %s: %w", path, err)
	}
	if cf.typ == PluginType {
		return nil, fmt.Errorf("conf %s: %w", path, errOnlyMeshless)
	}
	return c, nil
}

// conflistPath is where a converted .conf or .json goes: the same basename
// with the .conflist extension, so it keeps its place in the order.
func conflistPath(path string) string {
	return path[:len(path)-len(filepath.Ext(path))] + ".conflist"
}
