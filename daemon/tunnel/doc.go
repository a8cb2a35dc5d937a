// Package tunnel is Meshless's cross-node protocol: the node daemon of the
// client pod connects to the tunnel port (15008) of the destination pod's
// node, both daemons authenticate each other with mutual TLS 1.3 (their
// node certificates, package identity), and the client sends one small
// binary header naming the destination, then waits for a status byte that
// says whether the far daemon reached the application. After an OK status
// the connection carries the application's bytes, both ways, untouched,
// with half-close; there is no further framing and no multiplexing.
//
//	cl := &tunnel.Client{TLS: src.ClientConfig}           // keeps ready connections
//	c, err := cl.Dial(ctx, tunnel.Node{Name: "n2", Addr: addr}, tunnel.Header{Src: src, Dst: dst})
//	// c (a *tls.Conn) now talks to the application at dst
//
//	srv := &tunnel.Server{TLS: src.ServerConfig(), Dialer: d, Relay: r}
//	err := srv.Serve(ctx, ln)
//
// # Wire format, version 2 (inside TLS)
//
// All integers are big-endian. The client sends the request header:
//
//	offset  size  field
//	0       4     magic "MLTN" (0x4d 0x4c 0x54 0x4e)
//	4       1     version, 2
//	5       1     flags; none defined, must be 0
//	6       2     header length H: every byte of the header, these 8
//	              included; 8 < H <= 1024 (MaxHeaderLen)
//	8       1     destination family: 4 or 6
//	9       4|16  destination address
//	        2     destination port, not 0
//	        1     source family: 0 (no source), 4 or 6
//	        0|4|16 source address (absent for family 0)
//	        0|2   source port (absent for family 0)
//	        ...   extensions up to H: each is type (1 byte), length L
//	              (1 byte), L bytes of value. Receivers skip types they do
//	              not know. Type 1 (ExtService) is the service name
//	              (1 to 255 bytes).
//
// The source is the client pod's address; the server accepts it only as an
// address of a pod of the node that the TLS handshake authenticated (the
// Dialer's business), then connects to the application with it.
//
// The server answers with a reply of ReplyLen (4) bytes:
//
//	0  2  "ML" (0x4d 0x4c)
//	2  1  version of the server's answer (2)
//	3  1  status: 0 OK, 1 unsupported version, 2 malformed header,
//	      3 target refused, 4 target unreachable or timed out, 5 target
//	      not served by this node (or source not of the client's node),
//	      6 other dial failure, 7 denied by access policy, 8 target at its
//	      connection limit
//
// The status is sent only once the server's connection to the application
// is established (OK) or has failed (a failure code, then the server closes
// the connection). The client sends nothing after the header until it has
// read an OK reply, so no application byte ever reaches a server that
// cannot deliver it, and a racing client that loses can close an
// established tunnel without the application having seen any of its bytes.
//
// Version 1 was the same header in plaintext; a server of this version
// refuses it in the TLS handshake (identity.ReasonPlaintext). A connection
// whose handshake fails, whose first bytes are not the magic, whose header
// is malformed or longer than MaxHeaderLen, or that does not deliver its
// whole header within Server.HeaderTimeout is closed (after a status reply
// where one is meaningful) and reported through Server.OnReject as a
// *RejectError with its stage and reason. Decoding never trusts a length
// before checking it against MaxHeaderLen, and never panics (fuzzed).
package tunnel
