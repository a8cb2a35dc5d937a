package decide

import (
	"sync"
)

// Ticket is a live connection a Meshlet governs, as the decider keeps it:
// when the Meshlets change (Revalidate), a connection they no longer allow
// is closed. Its methods are safe for concurrent use and on a nil Ticket
// (a connection nothing governs).
type Ticket struct {
	d    *Decider
	a    access
	slot slotKey
	// limited: the service has a maxConn or an idleTimeout, which only a
	// daemon in the byte path can keep.
	limited bool

	mu    sync.Mutex
	close func(why string)
	done  bool
}

// Attach gives the ticket what closes its connection (both sides, with a
// reset); call it once the connection is delivered. close receives why.
func (t *Ticket) Attach(close func(why string)) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.close = close
}

// Done forgets the connection; call it when the connection ended, or when
// it was never used (a race's loser, a failed delivery).
func (t *Ticket) Done() {
	if t == nil {
		return
	}
	t.mu.Lock()
	if t.done {
		t.mu.Unlock()
		return
	}
	t.done = true
	t.mu.Unlock()
	t.d.liveMu.Lock()
	delete(t.d.live, t)
	t.d.liveMu.Unlock()
	t.d.limits.give(t.slot)
}

// Unlimited reports whether the connection's service keeps no
// per-connection limit (maxConn, idleTimeout): the connection may leave
// the daemon's byte path (a native API hand-off). True for a nil Ticket.
func (t *Ticket) Unlimited() bool { return t == nil || !t.limited }

// ticket records a governed, admitted connection holding slot.
func (d *Decider) ticket(a access, slot slotKey, limited bool) *Ticket {
	t := &Ticket{d: d, a: a, slot: slot, limited: limited}
	d.liveMu.Lock()
	d.live[t] = struct{}{}
	d.liveMu.Unlock()
	return t
}

// Revalidate judges every live governed connection against the current
// routing table's Meshlets and closes those they no longer allow (under
// Enforce). The daemon calls it after each change of the table. It
// returns how many it closed.
func (d *Decider) Revalidate() int {
	if d.cfg.AccessPolicy != Enforce {
		return 0 // audit and off never close a connection
	}
	d.liveMu.Lock()
	tickets := make([]*Ticket, 0, len(d.live))
	for t := range d.live {
		tickets = append(tickets, t)
	}
	d.liveMu.Unlock()
	snap := d.cfg.Routes.Snapshot()
	closed := 0
	for _, t := range tickets {
		v := check(snap, d.cfg.NodeAddrs, t.a)
		if v.allowed {
			continue
		}
		t.mu.Lock()
		close := t.close
		t.mu.Unlock()
		if close != nil {
			close("policy changed: " + v.why)
			closed++
		}
		t.Done()
	}
	return closed
}

// Live returns how many governed connections are live.
func (d *Decider) Live() int {
	d.liveMu.Lock()
	defer d.liveMu.Unlock()
	return len(d.live)
}
