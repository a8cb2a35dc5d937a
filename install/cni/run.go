package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// firstBackoff is the first wait between retries while there is no config
// (or an error); it doubles up to Config.Resync. inotify usually ends the
// wait sooner.
const firstBackoff = time.Second

// Run installs the binary, waits for the primary network config and inserts
// the entry. Without watch it returns after the first successful insertion.
// With watch it keeps the entry there until ctx is done, re-inserting when
// the primary CNI rewrites its file or another config becomes primary, and
// then returns nil. Changes are noticed through inotify on the conf dir,
// backed by a re-check every Config.Resync (which also restores a missing
// or altered binary).
func (in *Installer) Run(ctx context.Context, watch bool) error {
	if _, err := in.InstallBinary(); err != nil {
		return err
	}
	var events <-chan struct{}
	var w *dirWatcher
	if !in.noInotify {
		var err error
		if w, err = newDirWatcher(in.cfg.ConfDir); err != nil {
			in.log.Warn("inotify unavailable; re-checking periodically only",
				slog.String("err", err.Error()), slog.Duration("every", in.cfg.Resync))
		} else {
			defer w.close()
			events = w.C()
		}
	}
	backoff := min(firstBackoff, in.cfg.Resync)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	waiting, retries, reported := false, 0, false
	for {
		if w != nil {
			_ = w.watch() // the dir may not exist yet: the re-check retries
		}
		next := in.cfg.Resync
		res, err := in.Insert()
		if !errors.Is(err, errChanged) {
			retries = 0
		}
		switch {
		case err == nil:
			if !reported && !res.Changed {
				in.log.Info(PluginType+" is already in the primary CNI config", slog.String("conf", res.Conf))
			}
			waiting, reported = false, true
			backoff = min(firstBackoff, in.cfg.Resync)
			if !watch {
				return nil
			}
		case errors.Is(err, errChanged) && retries < 5:
			in.log.Debug("config changed while updating it; retrying", slog.String("err", err.Error()))
			retries++
			continue
		case errors.Is(err, ErrNoConfig):
			if !waiting {
				in.log.Info(fmt.Sprintf("no CNI config in %s yet; waiting", in.cfg.ConfDir),
					slog.Duration("retry", backoff))
			} else {
				in.log.Debug("still no CNI config", slog.String("dir", in.cfg.ConfDir), slog.Duration("retry", backoff))
			}
			waiting = true
			next, backoff = backoff, min(2*backoff, in.cfg.Resync)
		default:
			if !watch {
				return err
			}
			in.log.Error("cannot insert "+PluginType+"; will retry", slog.String("err", err.Error()),
				slog.Duration("retry", backoff))
			next, backoff = backoff, min(2*backoff, in.cfg.Resync)
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			if watch {
				in.log.Info("stopped watching", slog.String("dir", in.cfg.ConfDir))
				return nil
			}
			return fmt.Errorf("waiting for a CNI config in %s: %w", in.cfg.ConfDir, ctx.Err())
		case <-events:
			timer.Stop() // Go 1.23 timers: no stale value to drain
		case <-timer.C:
			if _, err := in.InstallBinary(); err != nil {
				in.log.Error("cannot restore plugin binary; will retry", slog.String("err", err.Error()))
			}
		}
	}
}
