package inpod

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/podnet"
)

// Start restores the persisted pods: pending deregistrations are applied
// first, then every pod whose netns still exists gets its listeners back
// and every other pod is dropped. The agent is ready when Start returns
// nil. Start also launches the loop that drops pods whose netns vanished;
// it runs until Close.
func (a *Manager) Start(ctx context.Context) error {
	a.applyPending()
	pods, err := a.cfg.Store.Load()
	if err != nil {
		// Unreadable files are skipped; the others are restored.
		a.log.Error("some pod state could not be read", "dir", a.cfg.Store.Dir(), "err", err)
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return fmt.Errorf("%w: closed", ErrNotReady)
	}
	for i := range pods {
		if err := ctx.Err(); err != nil {
			a.mu.Unlock()
			return err
		}
		a.restoreLocked(&pods[i])
	}
	a.mu.Unlock()
	a.ready.Store(true)
	a.bg.Add(1)
	go a.sweepLoop()
	a.log.Info("state restored", "pods", len(a.List()))
	return nil
}

func (a *Manager) restoreLocked(pod *cniapi.Pod) {
	key := pod.Key()
	if !podnet.Exists(pod.Netns) {
		a.log.Info("pod netns gone, dropping pod", "pod", key, "netns", pod.Netns)
		if err := a.cfg.Store.Delete(pod.Attachment); err != nil {
			a.log.Error("delete pod state", "pod", key, "err", err)
		}
		return
	}
	e, err := openEntry(a.ctx, pod)
	if err != nil {
		// The state stays, so the next start tries again; the plugin's
		// CHECK sees the pod unregistered meanwhile.
		a.log.Error("restore pod listeners", "pod", key, "netns", pod.Netns, "err", err)
		return
	}
	a.addLocked(e)
	a.log.Info("pod restored", "pod", key, "netns", pod.Netns, "listeners", e.addrs())
}

// applyPending applies the deregistrations the plugin left as files while
// the daemon was unreachable, and removes the files. Failures are logged:
// the file stays and the next call retries.
func (a *Manager) applyPending() {
	if a.cfg.Socket == "" {
		return
	}
	pending, bad, err := cniapi.ReadPending(a.cfg.Socket)
	if err != nil {
		a.log.Error("read pending deregistrations", "err", err)
		return
	}
	for _, f := range bad {
		a.log.Warn("removing unreadable pending deregistration", "file", f)
		os.Remove(f)
	}
	if len(pending) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, att := range pending {
		if err := a.deregisterLocked(att, "pending deregistration"); err != nil {
			a.log.Error("apply pending deregistration", "pod", att.Key(), "err", err)
			continue
		}
		if err := cniapi.ClearPending(a.cfg.Socket, att); err != nil {
			a.log.Error("remove pending deregistration", "pod", att.Key(), "err", err)
		}
	}
}

// sweepLoop drops pods whose netns path vanished (a DEL that never came)
// and applies pending deregistrations. One statfs per pod per interval.
func (a *Manager) sweepLoop() {
	defer a.bg.Done()
	t := time.NewTicker(a.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
			a.Sweep()
		}
	}
}

// Sweep runs one round of the background loop now.
func (a *Manager) Sweep() {
	a.applyPending()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	for _, e := range a.pods {
		spec := e.pod.Spec()
		if podnet.Exists(spec.Netns) {
			if e.native == nil {
				// The pod's Meshless folder may appear after its ADD
				// (the kubelet's volume); then its socket opens now.
				a.startNative(e)
			}
			continue
		}
		if err := a.deregisterLocked(spec.Attachment, "netns gone"); err != nil {
			a.log.Error("drop pod", "pod", spec.Key(), "err", err)
		}
	}
}
