package tunnel

import (
	"context"
	"crypto/tls"
	"sync"
	"time"
)

// The pool keeps TLS connections to peer nodes handshaken and ready, each
// for one application connection: a TCP and a TLS 1.3 handshake cost 1 to
// 3 ms of a 2-core node's time, against a fraction of a millisecond for the
// header's round trip, so they are paid in the background, not on the
// critical path of the application's connect(). One connection per
// application connection (no multiplexing) keeps each one's bytes,
// half-close and backpressure its own.
//
// Per node the pool aims at want ready connections: it starts at the
// Client's Warm, doubles whenever a Dial finds none ready (a burst), up to
// maxWant, and halves each tidy period without a miss. Ready connections
// older than maxIdle are closed (the far side would close them anyway),
// and a node not asked for during idleNode drops to its floor: 1 when
// prewarmed, else 0.
type pool struct {
	dial      func(ctx context.Context, n Node) (*tls.Conn, error)
	warm      int
	maxIdle   time.Duration
	onDialErr func(Node, error)

	mu     sync.Mutex
	nodes  map[Node]*nodePool
	closed bool
	tidy   *time.Timer
}

type nodePool struct {
	ready    []readyConn
	dialing  int
	want     int
	floor    int
	misses   int
	lastUsed time.Time
	// pauseUntil holds background dials back after one failed.
	pauseUntil time.Time
}

type readyConn struct {
	c    *tls.Conn
	born time.Time
}

const (
	maxWant    = 32
	idleNode   = 2 * time.Minute
	tidyPeriod = 10 * time.Second
	dialPause  = time.Second
	// bgDialTimeout bounds a background dial and its handshake.
	bgDialTimeout = 10 * time.Second
)

func newPool(dial func(context.Context, Node) (*tls.Conn, error), warm int, maxIdle time.Duration, onErr func(Node, error)) *pool {
	return &pool{dial: dial, warm: warm, maxIdle: maxIdle, onDialErr: onErr, nodes: map[Node]*nodePool{}}
}

// get returns a ready connection to n, or dials one now when none is
// ready; warm reports which. The caller calls refill once its connection's
// exchange is over: a handshake made meanwhile would take the CPU the
// exchange waits for.
func (p *pool) get(ctx context.Context, n Node) (c *tls.Conn, warm bool, err error) {
	p.mu.Lock()
	np := p.nodeLocked(n)
	np.lastUsed = time.Now()
	for len(np.ready) > 0 {
		// The newest first: the least likely to have been closed.
		r := np.ready[len(np.ready)-1]
		np.ready = np.ready[:len(np.ready)-1]
		if time.Since(r.born) < p.maxIdle {
			c = r.c
			break
		}
		r.c.Close()
	}
	if c == nil && p.warm > 0 {
		np.misses++
		np.want = min(max(2*np.want, p.warm), maxWant)
	}
	p.mu.Unlock()
	if c != nil {
		return c, true, nil
	}
	c, err = p.dial(ctx, n)
	return c, false, err
}

// refill starts the dials that bring n back to its ready connections.
func (p *pool) refill(n Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if np := p.nodes[n]; np != nil {
		p.fillLocked(n, np)
	}
}

// prewarm raises each node's floor to one ready connection.
func (p *pool) prewarm(nodes []Node) {
	if p.warm <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range nodes {
		np := p.nodeLocked(n)
		np.floor = 1
		np.want = max(np.want, 1)
		p.fillLocked(n, np)
	}
}

func (p *pool) nodeLocked(n Node) *nodePool {
	np := p.nodes[n]
	if np == nil {
		np = &nodePool{want: p.warm}
		p.nodes[n] = np
	}
	if p.tidy == nil && !p.closed {
		p.tidy = time.AfterFunc(tidyPeriod, p.tidyUp)
	}
	return np
}

// fillLocked starts the dials that bring n to want ready connections.
func (p *pool) fillLocked(n Node, np *nodePool) {
	if p.closed || time.Now().Before(np.pauseUntil) {
		return
	}
	for ; len(np.ready)+np.dialing < np.want; np.dialing++ {
		go p.dialReady(n)
	}
}

func (p *pool) dialReady(n Node) {
	ctx, cancel := context.WithTimeout(context.Background(), bgDialTimeout)
	c, err := p.dial(ctx, n)
	cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	np := p.nodes[n]
	np.dialing--
	if err != nil {
		np.pauseUntil = time.Now().Add(dialPause)
		if p.onDialErr != nil {
			go p.onDialErr(n, err)
		}
		return
	}
	if p.closed || len(np.ready) >= np.want {
		c.Close()
		return
	}
	np.ready = append(np.ready, readyConn{c, time.Now()})
}

// tidyUp closes stale ready connections, shrinks what idle nodes keep and
// refills the rest, every tidyPeriod while the pool lives.
func (p *pool) tidyUp() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	now := time.Now()
	for n, np := range p.nodes {
		keep := np.ready[:0]
		for _, r := range np.ready {
			if now.Sub(r.born) < p.maxIdle {
				keep = append(keep, r)
			} else {
				r.c.Close()
			}
		}
		np.ready = keep
		switch {
		case now.Sub(np.lastUsed) > idleNode:
			np.want = np.floor
		case np.misses == 0:
			np.want = max(np.want/2, p.warm, np.floor)
		}
		np.misses = 0
		for len(np.ready) > np.want {
			np.ready[0].c.Close()
			np.ready = np.ready[1:]
		}
		if np.want == 0 && len(np.ready) == 0 && np.dialing == 0 {
			delete(p.nodes, n)
			continue
		}
		p.fillLocked(n, np)
	}
	p.tidy.Reset(tidyPeriod)
}

func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.tidy != nil {
		p.tidy.Stop()
	}
	for _, np := range p.nodes {
		for _, r := range np.ready {
			r.c.Close()
		}
		np.ready = nil
	}
}
