// Package enroll puts into the mesh the pods that were already running when
// meshless-cni joined the node's CNI chain (Meshless installed on a node
// with pods): they never had a CNI ADD from the plugin, so they have
// neither redirection rules nor a registration with the daemon.
//
//	e := enroll.New(enroll.Config{NodeName: node, Pods: src.PodsOnNode..., Agent: ag})
//	go e.Run(ctx)     // after the agent's Start
//	e.Kick()          // on every pod change (kube.Options.OnPods)
//
// Each pass (after the first sync, on every pod change, and every Resync)
// takes the node's pods from the Kubernetes cache and selects those to
// enroll (Select): scheduled on this node, Running, not hostNetwork, with
// an address, not in an excluded namespace, not opted out by the
// meshless.io/mesh=disabled annotation, and not registered already (by UID
// or by address). For each it finds the pod's network namespace by address
// (Finder: runtime bind mounts and /proc/*/ns/net, deduplicated by inode,
// never the node's own netns), registers it with the agent under the
// synthetic attachment "enrolled-<UID>"/eth0 (the listeners are open when
// that returns) and only then writes the same redirection rules the plugin
// writes, rolling the registration back when the rules fail: the plugin's
// own sequence, podmesh.Join.
//
// An enrolled pod that is deleted (or finished, or gone from this node) is
// deregistered on the next pass, after its rules are removed when its
// netns still exists and still has its address; one whose netns vanished
// is also dropped by the agent's sweep. The agent's CNI GC leaves enrolled
// attachments alone. A pod whose netns is not found yet is retried
// (RetryInterval).
package enroll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/podmesh"
	"github.com/meshless/meshless/internal/redirect"
)

// Agent is what the enrollment needs of the daemon's agent.
type Agent interface {
	Register(ctx context.Context, pod *cniapi.Pod) (*cniapi.PodStatus, error)
	Deregister(ctx context.Context, att cniapi.Attachment) error
	List() []cniapi.PodStatus
}

// Namespaces finds network namespaces; *Finder in production.
type Namespaces interface {
	List() ([]Netns, error)
}

// Config is what an Enroller needs.
type Config struct {
	// NodeName is this node (spec.nodeName of its pods). Required.
	NodeName string
	// ExcludeNamespaces are never enrolled; nil means
	// DefaultExcludeNamespaces, empty non-nil means none.
	ExcludeNamespaces []string
	// Pods returns this node's pods from the cache, and false while the
	// cache has not synced (nothing is done then). Required.
	Pods func() ([]*corev1.Pod, bool)
	// Agent registers the pods. Required.
	Agent Agent
	// Netns defaults to &Finder{}.
	Netns Namespaces
	// Rules defaults to podmesh.Redirect{Mode: redirect.ModeAuto}.
	Rules podmesh.Rules
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Resync runs a pass this often even without pod changes; default 1m.
	Resync time.Duration
	// RetryInterval runs the next pass this soon after a pod failed to
	// enroll; default 5s.
	RetryInterval time.Duration
}

// Enroller enrolls running pods. Pass runs one round; Run loops.
type Enroller struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{}

	mu sync.Mutex
	// failed remembers the last error per pod UID, to log each once.
	failed map[string]string
}

// New returns an Enroller.
func New(cfg Config) (*Enroller, error) {
	if cfg.NodeName == "" || cfg.Pods == nil || cfg.Agent == nil {
		return nil, errors.New("enroll: node name, pods and agent are required")
	}
	if cfg.ExcludeNamespaces == nil {
		cfg.ExcludeNamespaces = DefaultExcludeNamespaces
	}
	if cfg.Netns == nil {
		cfg.Netns = &Finder{}
	}
	if cfg.Rules == nil {
		cfg.Rules = podmesh.Redirect{Mode: redirect.ModeAuto}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 5 * time.Second
	}
	return &Enroller{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), failed: map[string]string{}}, nil
}

// Kick asks for a pass soon; it never blocks.
func (e *Enroller) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// debounce collects a burst of pod events into one pass.
const debounce = 200 * time.Millisecond

// Run makes passes until ctx is done, on Kick (debounced), every Resync,
// and RetryInterval after a failure. It returns nil when ctx is done.
func (e *Enroller) Run(ctx context.Context) error {
	e.log.Info("enrollment of running pods: on", "node", e.cfg.NodeName, "exclude_namespaces", e.cfg.ExcludeNamespaces)
	t := time.NewTimer(e.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.kick:
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(debounce):
			}
		case <-t.C:
		}
		next := e.cfg.Resync
		if res := e.Pass(ctx); res.Failed > 0 {
			next = e.cfg.RetryInterval
		}
		t.Reset(next)
	}
}

// Result counts what a pass did.
type Result struct {
	Enrolled, Removed, Failed int
}

// Pass runs one round: enroll what Select picks, deregister stale
// enrolled pods.
func (e *Enroller) Pass(ctx context.Context) Result {
	var res Result
	pods, synced := e.cfg.Pods()
	if !synced {
		return res
	}
	regs := e.cfg.Agent.List()
	for _, r := range Stale(regs, pods, e.cfg.NodeName) {
		if err := e.remove(ctx, r); err != nil {
			e.log.Error("enrolled pod: deregister", "pod", r.Namespace+"/"+r.Name, "uid", r.UID, "err", err)
			res.Failed++
			continue
		}
		res.Removed++
	}
	cands, skipped := Select(pods, e.cfg.NodeName, e.cfg.ExcludeNamespaces, registered(regs))
	for _, s := range skipped {
		if s.Reason != "registered" {
			e.log.Debug("enrollment: pod skipped", "pod", s.Pod, "reason", s.Reason)
		}
	}
	if len(cands) == 0 {
		return res
	}
	all, err := e.cfg.Netns.List()
	if err != nil {
		e.log.Error("enrollment: list network namespaces", "err", err)
		res.Failed += len(cands)
		return res
	}
	for _, c := range cands {
		if err := e.enroll(ctx, c, all); err != nil {
			res.Failed++
			uid := string(c.Pod.UID)
			e.mu.Lock()
			same := e.failed[uid] == err.Error()
			e.failed[uid] = err.Error()
			e.mu.Unlock()
			if !same {
				e.log.Warn("enrollment failed; retrying", "pod", c.Key(), "uid", uid, "ips", c.IPs, "err", err)
			}
			continue
		}
		res.Enrolled++
		e.mu.Lock()
		delete(e.failed, string(c.Pod.UID))
		e.mu.Unlock()
	}
	return res
}

// enroll registers c (listeners open) and then writes its rules.
func (e *Enroller) enroll(ctx context.Context, c Candidate, all []Netns) error {
	n, err := Find(all, c.IPs)
	if err != nil {
		return err
	}
	pod := &cniapi.Pod{
		Attachment: Attachment(string(c.Pod.UID)),
		Netns:      n.Path,
		IPs:        c.IPs,
		Namespace:  c.Pod.Namespace,
		Name:       c.Pod.Name,
		UID:        string(c.Pod.UID),
		Exclusions: c.Exclusions,
		Redirect:   string(redirect.ModeAuto),
	}
	backend, err := podmesh.Join(ctx, e.cfg.Agent, e.cfg.Rules, pod)
	if err != nil {
		return err
	}
	e.log.Info("running pod enrolled", "pod", c.Key(), "uid", pod.UID, "ips", c.IPs, "netns", n.Path, "redirect", backend)
	return nil
}

// remove deletes a stale enrolled pod's rules, when its netns is still
// there with its address, and its registration.
func (e *Enroller) remove(ctx context.Context, r cniapi.PodStatus) error {
	var errs []error
	if addrs, err := Addrs(r.Netns); err == nil && overlaps(addrs, r.IPs) {
		if err := e.cfg.Rules.Remove(r.Netns); err != nil {
			errs = append(errs, fmt.Errorf("remove rules: %w", err))
		}
	}
	if err := e.cfg.Agent.Deregister(ctx, r.Attachment); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		e.log.Info("enrolled pod removed: gone from this node", "pod", r.Namespace+"/"+r.Name, "uid", r.UID)
	}
	return errors.Join(errs...)
}

func overlaps(a, b []netip.Addr) bool {
	for _, x := range a {
		if containsAddr(b, x) {
			return true
		}
	}
	return false
}
