package cni

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/meshless/meshless/internal/podmesh"
	"github.com/meshless/meshless/internal/redirect"
)

// Main runs `meshlessctl install-cni` with args (without the command name):
// it installs the plugin binary and the conflist entry, or with --watch
// keeps them in place until ctx is done, or with --uninstall removes them.
// Logs go to stderr; stdout gets one line saying what was done.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("install-cni", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		pluginBin = fs.String("plugin-bin", DefaultPluginBin(), "plugin binary to install")
		binDir    = fs.String("cni-bin-dir", DefaultBinDir, "host CNI bin dir")
		confDir   = fs.String("cni-conf-dir", DefaultConfDir, "host CNI conf dir")
		pluginCfg = fs.String("plugin-config", "", `JSON object merged onto the entry's defaults, e.g. '{"daemonSocket":"/run/meshless/cni.sock"}'; @FILE reads it from FILE`)
		watch     = fs.Bool("watch", false, "keep running and re-insert the entry whenever the primary config changes")
		uninstall = fs.Bool("uninstall", false, "remove the entry from the conflists and the binary, then exit")
		netnsDir  = fs.String("pod-netns-dir", "", "with --uninstall: also remove Meshless's redirection rules from every netns bound in this dir (the runtime's /var/run/netns), so running pods keep working unmeshed")
		resync    = fs.Duration("resync", DefaultResync, "period of the re-check that backs up inotify; longest retry wait")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat = fs.String("log-format", "text", "text or json")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: meshlessctl install-cni [flags]\n\n"+
			"Installs the %s chained plugin: copies the binary into the CNI bin dir and\n"+
			"inserts an entry last into the primary conflist. See docs/installer.md.\n\n", PluginType)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("install-cni: unexpected argument %q", fs.Arg(0))
	}
	if *watch && *uninstall {
		return errors.New("install-cni: --watch and --uninstall exclude each other")
	}
	if *netnsDir != "" && !*uninstall {
		return errors.New("install-cni: --pod-netns-dir goes with --uninstall")
	}
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	snippet, err := readSnippet(*pluginCfg)
	if err != nil {
		return fmt.Errorf("install-cni: --plugin-config: %w", err)
	}
	entry, err := NewEntry(snippet)
	if err != nil {
		return fmt.Errorf("install-cni: --plugin-config: %w", err)
	}
	if unknown := entry.UnknownKeys(); len(unknown) > 0 {
		logger.Warn("--plugin-config has keys "+PluginType+" does not know; check their spelling",
			slog.Any("keys", unknown))
	}
	if *resync <= 0 {
		*resync = time.Second
	}
	in := New(Config{
		PluginBin: *pluginBin, BinDir: *binDir, ConfDir: *confDir,
		Entry: entry, Resync: *resync, Logger: logger,
	})
	if *uninstall {
		if err := in.Uninstall(); err != nil {
			return fmt.Errorf("install-cni: uninstall: %w", err)
		}
		fmt.Fprintf(stdout, "%s removed from %s and %s\n", PluginType, *confDir, *binDir)
		if *netnsDir != "" {
			// Not fatal: the entry is gone from this node either way, and
			// the uninstall must finish on every node; a pod whose rules
			// stay is named, to be recreated.
			n, err := UnmeshPods(*netnsDir, podmesh.Redirect{Mode: redirect.ModeAuto}, logger)
			if err != nil {
				logger.Error("some pods keep Meshless's rules: recreate them (kubectl delete pod)", "err", err)
			}
			fmt.Fprintf(stdout, "no meshless rules left in %d network namespaces of %s\n", n, *netnsDir)
		}
		return nil
	}
	if err := in.Run(ctx, *watch); err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	if !*watch {
		fmt.Fprintf(stdout, "%s installed in %s and %s\n", PluginType, *binDir, *confDir)
	}
	return nil
}

// readSnippet returns the --plugin-config value, read from a file when it
// starts with '@'.
func readSnippet(v string) ([]byte, error) {
	if name, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		return b, nil
	}
	return []byte(v), nil
}

// newLogger returns a slog logger writing to w at the named level and
// format.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
