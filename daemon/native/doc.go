// Package native is Meshless's native API: how an app inside a Meshlet's
// pod calls a service, or serves one, over local unix sockets instead of
// TCP, and both ends of the small protocol that sets such a call up.
//
// An app that serves the Meshlet's service "web" listens on its socket;
// an app that calls it dials through the node daemon:
//
//	ln, err := native.Listen("web") // /meshlet/server/web
//	...
//	conn, err := native.Dial(ctx, "shop/frontend/web") // namespace/meshlet/service
//	// conn carries web's bytes both ways; conn.(interface{ CloseWrite() error })
//	// half-closes.
//
// Dial connects to the daemon's socket /meshlet/client/meshless, sends a
// request naming the service, and reads the daemon's reply: a refusal (a
// *StatusError: unknown service, not allowed, no instance, all full, ...),
// or OK. After OK the connection either carries the service's bytes,
// relayed by the daemon, or the daemon hands over a connection to the
// server's own socket with SCM_RIGHTS (same node, native to native), and
// the bytes flow from client to server with no TCP/IP and no daemon in
// between. Both ends see a plain stream connection either way.
//
// The daemon's side of the protocol is here too:
//
//	req, err := native.ReadRequest(c)        // exactly the request, not a byte more
//	if err != nil {
//		native.WriteReply(c, native.Reply{Status: native.StatusFor(err), Message: err.Error()})
//		...
//	}
//	// OK, relayed: WriteReply(c, Reply{}), then copy bytes both ways.
//	// OK, handed over: WriteReply(c, Reply{Handoff: true}); SendConn(c, server);
//	// then close both c and server.
//
// # Wire format, version 1
//
// docs/native-api.md specifies it for implementers in other languages. In
// short, all integers big-endian, the request is
//
//	"MLNA" | version 1 | flags 0 | body length (2) | namespace | meshlet | service | extensions
//
// with each name a length byte and that many bytes (DNS-1123 names), the
// whole at most MaxRequestLen bytes, and the reply is
//
//	"ML" | version 1 | status | flags (bit 0: handoff) | message length | message
//
// A handoff follows the reply as one HandoffMarker byte carrying the
// descriptor in an SCM_RIGHTS control message. ReadRequest and ReadReply
// never read past their message, never trust a length before bounding it,
// and never panic (fuzzed: FuzzReadRequest, FuzzReadReply).
package native
