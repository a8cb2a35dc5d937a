// Package inpod keeps the pods registered on this node and the daemon's
// listeners inside each pod's network namespace (the accept stage of the
// datapath): it opens 127.0.0.1:15001 (outbound) and :15006 (inbound) in
// the pod's netns when the pod registers, persists the registration so a
// restarted daemon reopens them, and hands every accepted connection to a
// ConnHandler with the pod it came from.
//
//	m, err := inpod.New(inpod.Config{Store: st, Handler: h, Socket: sock})
//	err = m.Start(ctx)              // restore state, apply pending DELs; Ready after
//	st, err := m.Register(ctx, pod) // listeners open when it returns
//	p, ok := m.PodByIP(ip)          // a registered pod, to dial inside its netns
//	defer m.Close()                 // listeners closed; state stays on disk
package inpod

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/meshletdir"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/podstore"
)

var (
	// ErrInvalid wraps errors caused by the request (bad pod, missing
	// netns); the API answers 400.
	ErrInvalid = errors.New("invalid request")
	// ErrNotReady is returned while the agent restores its state or after
	// it was closed; the API answers 503 and the plugin retries.
	ErrNotReady = errors.New("daemon not ready")
)

// Config is what a Manager needs.
type Config struct {
	// Store persists registrations. Required.
	Store *podstore.Store
	// Handler receives accepted connections. Required.
	Handler ConnHandler
	// Native, when set, serves each pod's native API socket, in the pod's
	// Meshless folder that Meshlets says where to find.
	Native   NativeHandler
	Meshlets meshletdir.Layout
	// Socket is the CNI socket path; pending deregistrations are read from
	// cniapi.PendingDir(Socket). Empty disables them.
	Socket string
	// Metrics, if set, receives meshless_pods and meshless_listeners.
	Metrics *metrics.Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// SweepInterval is how often pods whose netns vanished are dropped;
	// default 5s.
	SweepInterval time.Duration
}

// Manager owns the registered pods. Its methods are safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	ready  atomic.Bool
	bg     sync.WaitGroup

	// mu serialises every change of the pod set: opening listeners takes
	// a few milliseconds, and one order of events per attachment keeps
	// state file, listeners and map in agreement.
	mu     sync.Mutex
	pods   map[string]*entry
	byIP   map[netip.Addr]*entry
	closed bool
	// stopped holds entries stopped but maybe with handlers still running.
	stopped []*entry
}

// New returns an agent that is not ready until Start has run.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Handler == nil {
		return nil, errors.New("agent: store and handler are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{
		cfg:    cfg,
		log:    cfg.Logger,
		ctx:    ctx,
		cancel: cancel,
		pods:   map[string]*entry{},
		byIP:   map[netip.Addr]*entry{},
	}, nil
}

// Ready returns nil once Start has restored the state, ErrNotReady (with
// the reason) otherwise.
func (a *Manager) Ready() error {
	if !a.ready.Load() {
		return fmt.Errorf("%w: restoring state", ErrNotReady)
	}
	return nil
}

// Register opens pod's listeners, persists it and returns its status once
// the listeners accept. Registering an attachment again is idempotent: the
// same netns keeps its listeners, a different one replaces them.
func (a *Manager) Register(ctx context.Context, pod *cniapi.Pod) (*cniapi.PodStatus, error) {
	if err := a.Ready(); err != nil {
		return nil, err
	}
	if pod == nil {
		return nil, fmt.Errorf("%w: empty pod", ErrInvalid)
	}
	if err := pod.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	a.applyPending()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, fmt.Errorf("%w: shutting down", ErrNotReady)
	}
	key := pod.Key()
	pod = clonePod(pod)
	if old := a.pods[key]; old != nil && old.sameNetns(pod) {
		// Same netns: the listeners stay (closing them would refuse the
		// pod's connections for a moment); only the spec and, rarely, the
		// IPv6 listeners change.
		added, err := old.reconcile(pod)
		if err != nil {
			return nil, err
		}
		old.start(added, a.cfg.Handler, a.log)
		if err := a.cfg.Store.Save(pod); err != nil {
			return nil, err
		}
		a.unindex(old)
		old.pod.spec.Store(pod)
		a.index(old)
		a.setGauges()
		a.log.Info("pod re-registered", "pod", key, "netns", pod.Netns)
		return status(old), nil
	}
	e, err := openEntry(a.ctx, pod)
	if err != nil {
		return nil, err
	}
	if err := a.cfg.Store.Save(pod); err != nil {
		e.stop()
		return nil, err
	}
	if old := a.pods[key]; old != nil {
		a.removeLocked(old)
		a.log.Info("pod netns changed, listeners replaced", "pod", key, "netns", pod.Netns)
	}
	a.addLocked(e)
	a.log.Info("pod registered", "pod", key, "k8s", pod.Namespace+"/"+pod.Name, "netns", pod.Netns, "listeners", e.addrs())
	return status(e), nil
}

// clonePod copies pod deeply enough that the caller's later changes do not
// reach the agent's spec.
func clonePod(p *cniapi.Pod) *cniapi.Pod {
	c := *p
	c.IPs = slices.Clone(p.IPs)
	c.Exclusions.InboundPorts = slices.Clone(p.Exclusions.InboundPorts)
	c.Exclusions.OutboundPorts = slices.Clone(p.Exclusions.OutboundPorts)
	c.Exclusions.OutboundCIDRs = slices.Clone(p.Exclusions.OutboundCIDRs)
	return &c
}

// Deregister closes the listeners of a and deletes its state. An absent
// registration is not an error.
func (a *Manager) Deregister(ctx context.Context, att cniapi.Attachment) error {
	if err := a.Ready(); err != nil {
		return err
	}
	if err := att.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.deregisterLocked(att, "deregistered")
}

func (a *Manager) deregisterLocked(att cniapi.Attachment, why string) error {
	if e := a.pods[att.Key()]; e != nil {
		a.removeLocked(e)
		a.log.Info("pod removed", "pod", att.Key(), "reason", why)
	}
	return a.cfg.Store.Delete(att)
}

// GC deregisters every attachment not in valid and returns those removed.
// Attachments of enrolled pods (cniapi.EnrolledPrefix) are not the
// runtime's and stay.
func (a *Manager) GC(ctx context.Context, valid []cniapi.Attachment) ([]cniapi.Attachment, error) {
	if err := a.Ready(); err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, v := range valid {
		keep[v.Key()] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	removed := []cniapi.Attachment{}
	var errs []error
	for key, e := range a.pods {
		// Enrolled pods have no runtime attachment: the runtime's list
		// never names them; the enrollment removes them itself.
		if keep[key] || e.pod.Spec().Attachment.Enrolled() {
			continue
		}
		att := e.pod.Spec().Attachment
		if err := a.deregisterLocked(att, "gc"); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, att)
	}
	sort.Slice(removed, func(i, j int) bool { return removed[i].Key() < removed[j].Key() })
	return removed, errors.Join(errs...)
}

// Get returns the status of att, or false when it is not registered.
func (a *Manager) Get(att cniapi.Attachment) (*cniapi.PodStatus, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.pods[att.Key()]
	if e == nil {
		return nil, false
	}
	return status(e), true
}

// List returns the status of every registered pod, sorted by key.
func (a *Manager) List() []cniapi.PodStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := make([]cniapi.PodStatus, 0, len(a.pods))
	for _, e := range a.pods {
		l = append(l, *status(e))
	}
	sort.Slice(l, func(i, j int) bool { return l[i].Key() < l[j].Key() })
	return l
}

// PodByIP returns the registered pod that owns ip, for forwarding to a
// co-located pod through its netns.
func (a *Manager) PodByIP(ip netip.Addr) (*Pod, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.byIP[ip.Unmap()]
	if e == nil {
		return nil, false
	}
	return e.pod, true
}

// Close stops the background loop, closes every listener, cancels the
// handlers' contexts and waits for them. Pod state stays on disk, so the
// next Start restores it.
func (a *Manager) Close() error {
	a.mu.Lock()
	a.closed = true
	a.ready.Store(false)
	a.cancel()
	for key, e := range a.pods {
		e.stop()
		a.stopped = append(a.stopped, e)
		delete(a.pods, key)
	}
	clear(a.byIP)
	a.setGauges()
	stopped := a.stopped
	a.stopped = nil
	a.mu.Unlock()
	a.bg.Wait()
	for _, e := range stopped {
		e.wait()
	}
	return nil
}

func status(e *entry) *cniapi.PodStatus {
	return &cniapi.PodStatus{Pod: *clonePod(e.pod.Spec()), Listeners: e.addrs()}
}

func (a *Manager) addLocked(e *entry) {
	a.pods[e.pod.Key()] = e
	a.index(e)
	e.start(e.lns, a.cfg.Handler, a.log)
	a.startNative(e)
	a.setGauges()
}

// startNative opens and serves e's native API socket, when the daemon
// serves the native API and the pod has a Meshless folder. A failure
// leaves the pod meshed without it, and says why.
func (a *Manager) startNative(e *entry) {
	if a.cfg.Native == nil {
		return
	}
	ln, err := openNative(a.cfg.Meshlets, e.pod.Spec())
	if err != nil {
		a.log.Warn("pod meshed without its native api socket", "pod", e.pod.Key(), "err", err)
		return
	}
	if ln == nil {
		return
	}
	e.native = ln
	e.loops.Add(1)
	go e.acceptNative(ln, a.cfg.Native, a.log)
}

func (a *Manager) removeLocked(e *entry) {
	e.stop()
	delete(a.pods, e.pod.Key())
	a.unindex(e)
	// Keep it until Close so Close can wait for its handlers; forget the
	// ones already done to bound memory.
	live := a.stopped[:0]
	for _, s := range a.stopped {
		if !s.done() {
			live = append(live, s)
		}
	}
	a.stopped = append(live, e)
	a.setGauges()
}

func (a *Manager) index(e *entry) {
	for _, ip := range e.pod.Spec().IPs {
		a.byIP[ip.Unmap()] = e
	}
}

func (a *Manager) unindex(e *entry) {
	for _, ip := range e.pod.Spec().IPs {
		if a.byIP[ip.Unmap()] == e {
			delete(a.byIP, ip.Unmap())
		}
	}
}

func (a *Manager) setGauges() {
	if a.cfg.Metrics == nil {
		return
	}
	n := 0
	for _, e := range a.pods {
		n += len(e.lns)
	}
	a.cfg.Metrics.Pods.Set(float64(len(a.pods)))
	a.cfg.Metrics.Listeners.Set(float64(n))
}
