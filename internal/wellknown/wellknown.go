// Package wellknown holds the numbers and paths every part of Meshless
// agrees on: the plugin's rules redirect to the ports the daemon listens
// on, the daemon marks its sockets so those rules let them pass, the
// installer and meshlessctl find the daemon's socket. Each lives here once.
//
//	ln, err := n.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", wellknown.OutboundPort))
//	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(wellknown.SkipMark))
package wellknown

// Ports (DESIGN.md, fixed interface).
const (
	// OutboundPort receives a pod's redirected outgoing TCP; the daemon
	// listens on it on the pod's loopback only.
	OutboundPort = 15001
	// InboundPort receives TCP into a pod that did not come through a
	// daemon (clients outside the mesh, kubelet probes).
	InboundPort = 15006
	// TunnelPort is the daemon's node-address port for cross-node traffic.
	TunnelPort = 15008
	// AdminPort serves /healthz, /readyz and /metrics on the node's
	// loopback.
	AdminPort = 15020
)

// SkipMark is the socket mark (SO_MARK) the daemon sets on every socket it
// creates, under SkipMarkMask. The redirection rules let packets carrying
// it pass untouched; without it the daemon's own connections from inside a
// pod netns would be redirected back to the daemon, looping forever.
const (
	SkipMark     uint32 = 0x4d4c // "ML"
	SkipMarkMask uint32 = 0xffff
)

// TransparentMark is the socket mark of the daemon's connections that bind
// a foreign source address (IP_TRANSPARENT) inside a pod netns: the client
// pod's IP, so the server app sees who really called. It includes SkipMark
// in its low 16 bits, so the redirection rules skip it too. Bit 16 selects
// the return routing in the pod netns: the app's replies to that foreign
// address belong to the daemon's socket on this host, so connections marked
// this way have their replies routed to the local table
// (TransparentRouteTable) instead of out of the pod's interface.
const (
	TransparentMark       uint32 = TransparentMarkBit | SkipMark
	TransparentMarkBit    uint32 = 0x10000
	TransparentRouteTable        = 0x4d4c
)

// Paths on the node.
const (
	// DaemonSocket is the daemon's unix socket: the CNI plugin registers
	// pods on it, meshlessctl reads the daemon's status from it.
	DaemonSocket = "/run/meshless/cni.sock"
	// StateDir holds the daemon's persisted pod registrations.
	StateDir = "/var/lib/meshless"
)
