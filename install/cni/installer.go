// Package cni installs the meshless-cni chained plugin on a node: it copies
// the plugin binary into the CNI bin dir and inserts a meshless-cni entry
// last into the primary CNI's conflist, atomically, and keeps it there.
// See docs/installer.md.
package cni

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Defaults of Config.
const (
	DefaultBinDir  = "/opt/cni/bin"
	DefaultConfDir = "/etc/cni/net.d"
	DefaultResync  = 30 * time.Second
)

// Config configures an Installer. Zero fields take the defaults.
type Config struct {
	// PluginBin is the plugin binary to copy (default DefaultPluginBin()).
	PluginBin string
	// BinDir is the host's CNI bin dir (default /opt/cni/bin).
	BinDir string
	// ConfDir is the host's CNI conf dir (default /etc/cni/net.d).
	ConfDir string
	// Entry is the inserted configuration (default NewEntry(nil)).
	Entry *Entry
	// Resync is the period of the re-check that backs up inotify, and the
	// longest wait between retries (default 30s).
	Resync time.Duration
	// Logger receives the logs (default slog.Default()).
	Logger *slog.Logger
}

// Installer inserts and removes the meshless-cni entry and binary. Its
// methods must not be called concurrently.
type Installer struct {
	cfg      Config
	log      *slog.Logger
	reported map[string]string // config file -> problem already logged
	// noInotify makes Run rely on the periodic re-check only (tests).
	noInotify bool
}

// New returns an Installer for cfg, with defaults filled in.
func New(cfg Config) *Installer {
	if cfg.PluginBin == "" {
		cfg.PluginBin = DefaultPluginBin()
	}
	if cfg.BinDir == "" {
		cfg.BinDir = DefaultBinDir
	}
	if cfg.ConfDir == "" {
		cfg.ConfDir = DefaultConfDir
	}
	if cfg.Entry == nil {
		cfg.Entry, _ = NewEntry(nil)
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Installer{cfg: cfg, log: cfg.Logger, reported: map[string]string{}}
}

// Result says what one insertion pass found and did.
type Result struct {
	// Conf is the conflist that holds the entry.
	Conf string
	// Changed is true when Conf was written.
	Changed bool
	// Converted is the single-plugin conf that became Conf, if any.
	Converted string
}

// InstallBinary copies the plugin binary into the CNI bin dir, unless an
// identical one is there. It reports whether it wrote it.
func (in *Installer) InstallBinary() (bool, error) {
	wrote, err := installBinary(in.cfg.PluginBin, in.cfg.BinDir)
	if err != nil {
		return false, err
	}
	if wrote {
		in.log.Info("installed plugin binary", slog.String("from", in.cfg.PluginBin), slog.String("dir", in.cfg.BinDir))
	}
	return wrote, nil
}

// Insert makes the primary network config end with the meshless-cni entry
// (and hold no other), converting a single-plugin conf into a conflist. It
// writes nothing when the file is already right. It returns an error that
// wraps ErrNoConfig when there is no valid config yet.
func (in *Installer) Insert() (Result, error) {
	c, err := in.primary()
	if err != nil {
		return Result{}, err
	}
	meta := metaOf(c.fi)
	if c.list {
		out, err := insertEntry(c.data, in.cfg.Entry)
		if err != nil {
			return Result{}, fmt.Errorf("conflist %s: %w", c.path, err)
		}
		if bytes.Equal(out, c.data) {
			return Result{Conf: c.path}, nil
		}
		// A symlinked config is updated where it points, so the link stays.
		target, err := filepath.EvalSymlinks(c.path)
		if err != nil {
			return Result{}, fmt.Errorf("conflist %s: %w", c.path, err)
		}
		if err := writeAtomic(target, bytes.NewReader(out), meta, c.path, c.fi); err != nil {
			return Result{}, fmt.Errorf("update %s: %w", c.path, err)
		}
		in.log.Info("inserted "+PluginType+" into the primary CNI config", slog.String("conf", c.path))
		return Result{Conf: c.path, Changed: true}, nil
	}
	out, err := convertConf(c.data, in.cfg.Entry)
	if err != nil {
		return Result{}, fmt.Errorf("conf %s: %w", c.path, err)
	}
	dst := conflistPath(c.path)
	// The new conflist first, then the old conf: the runtime always sees
	// one valid primary, first the conf, then the conflist at its place.
	if err := writeAtomic(dst, bytes.NewReader(out), meta, c.path, c.fi); err != nil {
		return Result{}, fmt.Errorf("convert %s: %w", c.path, err)
	}
	if err := unchanged(c.path, c.fi); err != nil {
		// The primary CNI rewrote its conf meanwhile: it stays first, and
		// the next pass converts it again.
		return Result{}, fmt.Errorf("convert %s: %w", c.path, err)
	}
	if err := os.Remove(c.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Result{}, fmt.Errorf("convert %s: remove: %w", c.path, err)
	}
	in.log.Info("converted the primary CNI conf to a conflist and inserted "+PluginType,
		slog.String("from", c.path), slog.String("conf", dst))
	return Result{Conf: dst, Changed: true, Converted: c.path}, syncDir(in.cfg.ConfDir)
}

// Uninstall removes the meshless-cni entry from every conflist of the conf
// dir, leaving the rest of each file as it was, then removes the plugin
// binary. A conflist converted from a conf stays a conflist. Files that
// are not valid conflists are left alone. It is idempotent.
func (in *Installer) Uninstall() error {
	files, err := confFiles(in.cfg.ConfDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, path := range files {
		if err := in.uninstallConf(path); err != nil {
			errs = append(errs, err)
		}
	}
	removed, err := removeBinary(in.cfg.BinDir)
	if err != nil {
		errs = append(errs, err)
	} else if removed {
		in.log.Info("removed plugin binary", slog.String("dir", in.cfg.BinDir))
	}
	return errors.Join(errs...)
}

// uninstallConf removes the entry from one conflist, retrying when the file
// changes under it.
func (in *Installer) uninstallConf(path string) error {
	for attempt := 0; ; attempt++ {
		data, fi, err := readStat(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("read %s: %w", path, err)
		}
		if _, perr := parseConflist(data); perr != nil {
			return nil // not a conflist this installer writes into
		}
		out, found, err := removeEntry(data)
		if err != nil {
			in.log.Warn("leaving conflist as it is", slog.String("conf", path), slog.String("err", err.Error()))
			return nil
		}
		if !found {
			return nil
		}
		target, err := filepath.EvalSymlinks(path)
		if err != nil {
			return fmt.Errorf("update %s: %w", path, err)
		}
		err = writeAtomic(target, bytes.NewReader(out), metaOf(fi), path, fi)
		if errors.Is(err, errChanged) && attempt < 3 {
			continue
		}
		if err != nil {
			return fmt.Errorf("update %s: %w", path, err)
		}
		in.log.Info("removed "+PluginType+" from CNI config", slog.String("conf", path))
		return nil
	}
}
