package relay

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Pair is two established TCP connections whose received bytes the
// kernel forwards to each other.
type Pair struct {
	m    *Sockmap
	a, b *net.TCPConn
	// ca, cb are the sockets' cookies.
	ca, cb uint64
	// wa0, wb0 are the bytes written into each socket before pairing
	// (a tunnel header, say), the base of flushed.
	wa0, wb0 uint64
	// aEnabled, bEnabled: the verdict runs on a's, b's received data. A
	// side not enabled (its peer closed while pairing) is forwarded by Run
	// in user space.
	aEnabled, bEnabled bool

	mu       sync.Mutex
	released bool
	final    [2]uint64
}

// Pair makes the kernel forward what a receives to b and what b receives
// to a. Both must be established TCP connections of which nothing was read
// that is not meant for the daemon (a tunnel header, read exactly, is
// fine); data they received already is forwarded too (kicked through the
// verdict right away). On error nothing is paired and the connections are
// untouched: copy them in user space. Use Run, or Release when done.
func (m *Sockmap) Pair(a, b *net.TCPConn) (*Pair, error) {
	p := &Pair{m: m, a: a, b: b}
	var err error
	if p.ca, err = cookie(a); err != nil {
		return nil, err
	}
	if p.cb, err = cookie(b); err != nil {
		return nil, err
	}
	if p.wa0, err = written(a); err != nil {
		return nil, err
	}
	if p.wb0, err = written(b); err != nil {
		return nil, err
	}
	var zero uint64
	if err := m.bytes.Update(p.ca, zero, ebpf.UpdateNoExist); err != nil {
		return nil, fmt.Errorf("sockmap: pair: %w", err)
	}
	if err := m.bytes.Update(p.cb, zero, ebpf.UpdateNoExist); err != nil {
		m.bytes.Delete(p.ca)
		return nil, fmt.Errorf("sockmap: pair: %w", err)
	}
	// Peers first: both sockets get a psock that can transmit before
	// either's verdict runs, so no redirect ever misses its target.
	if err := insert(m.peers, p.ca, b); err != nil {
		p.undo()
		return nil, fmt.Errorf("sockmap: pair: %w", err)
	}
	if err := insert(m.peers, p.cb, a); err != nil {
		p.undo()
		return nil, fmt.Errorf("sockmap: pair: %w", err)
	}
	if err := insert(m.enabled, p.ca, a); err != nil {
		p.undo()
		return nil, fmt.Errorf("sockmap: pair: %w", err)
	}
	p.aEnabled = true
	// From here a's bytes may already flow through the kernel: no going
	// back. If b cannot be enabled (it got a FIN or RST since), Run copies
	// b's side in user space.
	p.bEnabled = insert(m.enabled, p.cb, b) == nil
	// Data received before the verdict was attached sits in the receive
	// queue until the next skb arrives, which may be never (a request
	// waiting for its answer). SO_RCVLOWAT makes TCP call sk_data_ready,
	// which is now the verdict's; the first read of Run does the same.
	kick(a)
	if p.bEnabled {
		kick(b)
	}
	return p, nil
}

// undo removes what a failed Pair inserted.
func (p *Pair) undo() {
	p.m.bytes.Delete(p.ca)
	p.m.bytes.Delete(p.cb)
	for _, mp := range []*ebpf.Map{p.m.enabled, p.m.peers} {
		mp.Delete(p.ca)
		mp.Delete(p.cb)
	}
}

// Redirected returns the bytes the kernel forwarded from a to b and from b
// to a so far (after Release: the final counts).
func (p *Pair) Redirected() (aToB, bToA uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return p.final[0], p.final[1]
	}
	return p.count(p.ca), p.count(p.cb)
}

func (p *Pair) count(c uint64) uint64 {
	var n uint64
	if err := p.m.bytes.Lookup(c, &n); err != nil {
		return 0
	}
	return n
}

// Release takes the connections out of the maps: what they receive from
// then on goes to user space. Closing a connection releases it in the
// kernel too, but Release also frees the byte counters. Idempotent.
func (p *Pair) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return
	}
	p.final = [2]uint64{p.count(p.ca), p.count(p.cb)}
	p.released = true
	p.undo()
}

// flushed reports whether dst has taken into its send queue every byte
// forwarded to it: want (bytes redirected plus copied by user space) since
// pairing. Before a FIN is passed on, or the FIN would overtake bytes the
// kernel still holds for dst.
func (p *Pair) flushed(dst *net.TCPConn, want uint64) (bool, error) {
	w, err := written(dst)
	if err != nil {
		return false, err
	}
	return w-p.base(dst) >= want, nil
}

func (p *Pair) base(dst *net.TCPConn) uint64 {
	if dst == p.a {
		return p.wa0
	}
	return p.wb0
}

// insert puts c's socket into mp under key.
func insert(mp *ebpf.Map, key uint64, c *net.TCPConn) error {
	return control(c, func(fd int) error {
		return mp.Update(key, uint64(fd), ebpf.UpdateNoExist)
	})
}

func control(c *net.TCPConn, f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// cookie returns c's socket cookie.
func cookie(c *net.TCPConn) (uint64, error) {
	var ck uint64
	err := control(c, func(fd int) error {
		v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		ck = v
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sockmap: SO_COOKIE: %w", err)
	}
	if ck == 0 {
		return 0, errors.New("sockmap: socket has no cookie")
	}
	return ck, nil
}

// written returns how many bytes were written into c's send queue since
// the connection was established: acknowledged ones plus those still
// queued (SIOCOUTQ). Read in that order, a concurrent ACK can only make
// the sum smaller than the truth, never larger. Not meaningful once a FIN
// was sent.
func written(c *net.TCPConn) (uint64, error) {
	var w uint64
	err := control(c, func(fd int) error {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return err
		}
		q, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if err != nil {
			return err
		}
		w = ti.Bytes_acked + uint64(q)
		return nil
	})
	return w, err
}

// kick makes TCP run c's sk_data_ready, now the verdict's, over what c
// received already.
func kick(c *net.TCPConn) {
	control(c, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1)
	})
}
