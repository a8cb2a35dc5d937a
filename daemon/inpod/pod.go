package inpod

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/podnet"
	"github.com/meshless/meshless/internal/wellknown"
)

// Direction tells a ConnHandler which listener accepted a connection.
type Direction int

const (
	// Outbound connections were sent by the pod's app and redirected to
	// the outbound listener (127.0.0.1:15001 / [::1]:15001 in the pod).
	Outbound Direction = iota
	// Inbound connections were sent to the pod and redirected to the
	// inbound listener (:15006 in the pod).
	Inbound
)

// String returns "outbound" or "inbound", the metric label values.
func (d Direction) String() string {
	if d == Inbound {
		return metrics.Inbound
	}
	return metrics.Outbound
}

// ErrPodGone is returned by Pod.Dial and Pod.Use once the pod has been
// deregistered and its netns handle closed.
var ErrPodGone = errors.New("pod deregistered")

// Pod is a registered pod as the connection handlers see it: its
// registration and access to its netns.
type Pod struct {
	// spec is replaced, never modified, when the pod re-registers.
	spec atomic.Pointer[cniapi.Pod]

	// mu guards the netns handle: Dial and Use hold it shared; close takes
	// it exclusively, so the fd is never closed (and its number reused by
	// an unrelated file) while a thread is about to setns into it.
	mu     sync.RWMutex
	ns     *podnet.NS
	closed bool
}

// Spec returns the pod's current registration. The caller must not modify
// it.
func (p *Pod) Spec() *cniapi.Pod { return p.spec.Load() }

// Key is the pod's attachment key.
func (p *Pod) Key() string { return p.spec.Load().Key() }

// Dial connects to addr from inside the pod's netns. The socket carries the
// skip mark, so the pod's redirect rules let it pass instead of sending it
// back to the daemon. ctx bounds the time a thread spends in the netns.
func (p *Pod) Dial(ctx context.Context, network, addr string, o podnet.DialOptions) (*net.TCPConn, error) {
	var c *net.TCPConn
	err := p.Use(func(n *podnet.NS) error {
		var err error
		c, err = n.Dial(ctx, network, addr, o)
		return err
	})
	return c, err
}

// Use runs fn with the pod's netns handle, which stays open until fn
// returns. fn must not keep the handle.
func (p *Pod) Use(fn func(*podnet.NS) error) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return fmt.Errorf("pod %s: %w", p.Key(), ErrPodGone)
	}
	return fn(p.ns)
}

func (p *Pod) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		p.ns.Close()
	}
}

// ConnHandler forwards the connections the daemon accepts inside pods.
type ConnHandler interface {
	// HandleConn owns c and must close it. It runs in its own goroutine.
	// ctx is cancelled when the pod is deregistered or the daemon stops;
	// the handler should then end the connection promptly. pod stays
	// usable for the call, but Dial fails with ErrPodGone after
	// deregistration.
	HandleConn(ctx context.Context, pod *Pod, dir Direction, c *net.TCPConn)
}

// listenSpec is one listener to open inside a pod.
type listenSpec struct {
	network, addr string
	dir           Direction
}

// wantListeners derives the listeners a pod needs from its addresses.
//
// Outbound listens on loopback only: REDIRECT of locally generated packets
// rewrites the destination to the loopback address, and nothing outside the
// pod must reach it. Inbound listens on the wildcard because PREROUTING
// REDIRECT uses the address of the incoming interface. "tcp6" makes Go set
// IPV6_V6ONLY, so [::]:15006 does not collide with 0.0.0.0:15006.
func wantListeners(pod *cniapi.Pod) []listenSpec {
	out := fmt.Sprint(wellknown.OutboundPort)
	in := fmt.Sprint(wellknown.InboundPort)
	l := []listenSpec{
		{"tcp4", "127.0.0.1:" + out, Outbound},
		{"tcp4", "0.0.0.0:" + in, Inbound},
	}
	if hasIPv6(pod) {
		l = append(l,
			listenSpec{"tcp6", "[::1]:" + out, Outbound},
			listenSpec{"tcp6", "[::]:" + in, Inbound})
	}
	return l
}

func hasIPv6(pod *cniapi.Pod) bool {
	for _, ip := range pod.IPs {
		if ip.Is6() && !ip.Is4In6() {
			return true
		}
	}
	return false
}

// entry is the agent's record of a registered pod: the Pod handed to
// handlers, its listeners and the goroutines serving them.
type entry struct {
	pod  *Pod
	nsID nsID
	lns  []listener
	// native is the pod's native API socket; nil when it has none.
	native net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	// loops tracks accept loops and handler goroutines; finished is closed
	// when all have returned after stop.
	loops    sync.WaitGroup
	finished chan struct{}
}

// listener is one open listener of an entry.
type listener struct {
	spec listenSpec
	ln   net.Listener
}

// openEntry opens pod's netns and its listeners. Nothing is served until
// start is called.
func openEntry(parent context.Context, spec *cniapi.Pod) (*entry, error) {
	n, err := podnet.Open(spec.Netns)
	if err != nil {
		return nil, fmt.Errorf("%w: netns: %w", ErrInvalid, err)
	}
	// Taken right after Open: the path is the runtime's bind mount, which
	// it does not replace while the attachment exists.
	id, err := netnsID(spec.Netns)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("%w: netns: %w", ErrInvalid, err)
	}
	e := &entry{pod: &Pod{ns: n}, nsID: id, finished: make(chan struct{})}
	e.pod.spec.Store(spec)
	e.ctx, e.cancel = context.WithCancel(parent)
	if _, err := e.reconcile(spec); err != nil {
		e.stop()
		return nil, err
	}
	return e, nil
}

// reconcile opens the listeners spec needs that e lacks and closes those it
// no longer needs (a re-registration that gained or lost IPv6). It returns
// the new listeners, not yet served.
func (e *entry) reconcile(spec *cniapi.Pod) ([]listener, error) {
	want := wantListeners(spec)
	keep := e.lns[:0]
	for _, l := range e.lns {
		if slices.Contains(want, l.spec) {
			keep = append(keep, l)
		} else {
			l.ln.Close()
		}
	}
	e.lns = keep
	var added []listener
	for _, w := range want {
		if slices.ContainsFunc(e.lns, func(l listener) bool { return l.spec == w }) {
			continue
		}
		var ln net.Listener
		err := e.pod.Use(func(n *podnet.NS) error {
			var err error
			ln, err = n.Listen(w.network, w.addr)
			return err
		})
		if err != nil {
			for _, l := range added {
				l.ln.Close()
			}
			e.lns = e.lns[:len(e.lns)-len(added)]
			return nil, err
		}
		l := listener{w, ln}
		e.lns = append(e.lns, l)
		added = append(added, l)
	}
	return added, nil
}

// addrs returns the addresses of the open listeners.
func (e *entry) addrs() []string {
	a := make([]string, len(e.lns))
	for i, l := range e.lns {
		a[i] = l.ln.Addr().String()
	}
	return a
}

// start runs one accept loop per listener in ls.
func (e *entry) start(ls []listener, h ConnHandler, log *slog.Logger) {
	for _, l := range ls {
		e.loops.Add(1)
		go e.accept(l.ln, l.spec.dir, h, log)
	}
}

func (e *entry) accept(ln net.Listener, dir Direction, h ConnHandler, log *slog.Logger) {
	defer e.loops.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || e.ctx.Err() != nil {
				return
			}
			// Out of fds or similar: keep the listener, slow down, retry.
			log.Warn("accept failed", "pod", e.pod.Key(), "listener", ln.Addr().String(), "err", err)
			select {
			case <-time.After(backoff):
			case <-e.ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			continue
		}
		e.loops.Add(1)
		go func() {
			defer e.loops.Done()
			h.HandleConn(e.ctx, e.pod, dir, tc)
		}()
	}
}

// stop cancels the pod's connections, closes its listeners and its netns
// handle. Handlers may still be running (ending their connections); wait
// waits for them.
func (e *entry) stop() {
	e.cancel()
	for _, l := range e.lns {
		l.ln.Close()
	}
	if e.native != nil {
		e.native.Close() // unlinks the socket
	}
	// Dials in flight hold the handle; they end soon as ctx is cancelled.
	e.pod.close()
	go func() {
		e.loops.Wait()
		close(e.finished)
	}()
}

// wait blocks until every goroutine of a stopped entry has returned.
func (e *entry) wait() { <-e.finished }

// done reports whether a stopped entry's goroutines have all returned.
func (e *entry) done() bool {
	select {
	case <-e.finished:
		return true
	default:
		return false
	}
}

// sameNetns reports whether spec names the netns e already has open: same
// path and same namespace inode (a path can be reused by a new netns).
func (e *entry) sameNetns(spec *cniapi.Pod) bool {
	if spec.Netns != e.pod.Spec().Netns {
		return false
	}
	id, err := netnsID(spec.Netns)
	return err == nil && id == e.nsID
}

// nsID identifies a namespace by device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func netnsID(path string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}
