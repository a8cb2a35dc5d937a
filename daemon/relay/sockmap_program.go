// Package sockmap forwards established TCP↔TCP connection pairs inside the
// kernel with a BPF sockmap, so the daemon neither copies nor wakes up for
// the bytes of a paired connection: a BPF sk_skb verdict program attached
// to the receiving socket redirects every received skb to the egress of the
// peer socket.
//
//	m, err := sockmap.Load()      // once per daemon; needs CAP_BPF/root
//	p, err := m.Pair(a, b)        // both established, nothing read yet
//	res := sockmap.Run(ctx, p, o) // like pump.Run: FIN, RST, idle, close
//
// # Maps and program
//
// Sockets are named by their socket cookie (SO_COOKIE, unique per boot,
// also across network namespaces, so pairs whose sockets live in different
// pod netns never collide and no byte order of ports matters):
//
//   - peers, a SOCKHASH without programs: cookie(a) → b and cookie(b) → a.
//     Being in it gives both sockets a psock (the kernel's sockmap state)
//     that can transmit, but changes nothing on their receive path.
//   - enabled, a SOCKHASH with the verdict program attached:
//     cookie(s) → s. Inserting a socket here is what starts the verdict on
//     its received data; it happens only once both peers entries exist, so
//     the verdict never sees a socket whose peer is not there yet.
//   - bytes, a HASH: cookie(s) → bytes the verdict redirected from s. Its
//     entry also says "s is paired": no entry, the verdict returns SK_PASS
//     and the bytes go up to user space, where Run forwards them itself.
//
// The verdict program (sk_skb, attached as stream verdict without a stream
// parser, so skbs are handled as they come, with no message framing):
//
//	if skb->len == 0: return SK_DROP   // a bare FIN (Run's read sees EOF)
//	key = bpf_get_socket_cookie(skb)
//	n = bytes[key]; if !n: return SK_PASS
//	*n += skb->len (atomic)
//	return bpf_sk_redirect_hash(skb, &peers, &key, 0)   // 0: peer's egress
package relay

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// MaxPairs is how many connection pairs one Sockmap holds at once; Pair fails
// beyond (Run then falls back to copying in user space).
const MaxPairs = 1 << 15

// Sockmap is the loaded program and its maps. Closing it (or the daemon's
// exit) detaches every socket still in it.
type Sockmap struct {
	peers, enabled, bytes *ebpf.Map
	prog                  *ebpf.Program

	closeOnce sync.Once
	closeErr  error
}

// LoadSockmap creates the maps, loads the verdict program and attaches it. It
// fails without BPF privileges or sockmap support in the kernel.
func LoadSockmap() (*Sockmap, error) {
	m := &Sockmap{}
	var err error
	sock := func(name string) (*ebpf.Map, error) {
		return ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.SockHash, KeySize: 8, ValueSize: 8, MaxEntries: 2 * MaxPairs})
	}
	if m.peers, err = sock("meshless_peers"); err != nil {
		return nil, fmt.Errorf("sockmap: create peers map: %w", err)
	}
	if m.enabled, err = sock("meshless_enabled"); err != nil {
		m.Close()
		return nil, fmt.Errorf("sockmap: create enabled map: %w", err)
	}
	m.bytes, err = ebpf.NewMap(&ebpf.MapSpec{Name: "meshless_bytes", Type: ebpf.Hash, KeySize: 8, ValueSize: 8,
		MaxEntries: 2 * MaxPairs, Flags: bpfFNoPrealloc})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("sockmap: create bytes map: %w", err)
	}
	m.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "meshless_verdict",
		Type:         ebpf.SkSKB,
		AttachType:   ebpf.AttachSkSKBStreamVerdict,
		License:      "Dual BSD/GPL",
		Instructions: verdict(m.bytes.FD(), m.peers.FD()),
	})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("sockmap: load verdict program: %w", err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target: m.enabled.FD(), Program: m.prog, Attach: ebpf.AttachSkSKBStreamVerdict,
	}); err != nil {
		m.Close()
		return nil, fmt.Errorf("sockmap: attach verdict program: %w", err)
	}
	return m, nil
}

// bpfFNoPrealloc is BPF_F_NO_PREALLOC: the bytes map costs memory only
// for the pairs that exist.
const bpfFNoPrealloc = 1

// Offsets in struct __sk_buff and return codes of sk_skb programs.
const (
	skbLen = 0 // __u32 len
	skDrop = 0 // SK_DROP
	skPass = 1 // SK_PASS
)

// verdict returns the verdict program (see the package doc).
func verdict(bytesFD, peersFD int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// A FIN without data is dropped. Passed or redirected, it is
		// queued behind the socket's pending egress skbs when there are
		// any, and a zero-length skb in that backlog counts as a broken
		// pipe: EPIPE on the socket, and its forwarding stops. TCP has
		// processed the FIN already: Run's read still sees EOF.
		asm.LoadMem(asm.R1, asm.R6, skbLen, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "drop"),
		// key = bpf_get_socket_cookie(skb), on the stack at fp-8.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		// n = bytes[key]; not paired: pass.
		asm.LoadMapPtr(asm.R1, bytesFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		// *n += skb->len, atomically.
		asm.LoadMem(asm.R1, asm.R6, skbLen, asm.Word),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		// return bpf_sk_redirect_hash(skb, &peers, &key, 0)
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, peersFD),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkRedirectHash.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, skDrop).WithSymbol("drop"),
		asm.Return(),
	}
}

// Close detaches the program and frees the maps; sockets still paired go
// back to the normal receive path (their data then reaches user space).
func (m *Sockmap) Close() error {
	m.closeOnce.Do(func() {
		var errs []error
		if m.prog != nil && m.enabled != nil {
			link.RawDetachProgram(link.RawDetachProgramOptions{Target: m.enabled.FD(), Program: m.prog,
				Attach: ebpf.AttachSkSKBStreamVerdict})
		}
		for _, c := range []interface{ Close() error }{m.prog, m.enabled, m.peers, m.bytes} {
			if c == nil || isNilCloser(c) {
				continue
			}
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		m.closeErr = errors.Join(errs...)
	})
	return m.closeErr
}

func isNilCloser(c interface{ Close() error }) bool {
	switch v := c.(type) {
	case *ebpf.Map:
		return v == nil
	case *ebpf.Program:
		return v == nil
	}
	return false
}
