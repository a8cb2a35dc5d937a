package native_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/meshless/meshless/daemon/native"
)

// A server app serves "web" on its socket, a client app calls it by name,
// and between them a stand-in for the node daemon hands the client a
// connection to the server's socket. In a pod the directory is /meshlet
// and meshlessd is the daemon; both apps would use native.Listen and
// native.Dial with no configuration.
func Example() {
	dir, err := os.MkdirTemp("", "meshlet")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for _, sub := range []string{"client", "server"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			log.Fatal(err)
		}
	}

	// The server app.
	lc := native.ListenConfig{Dir: dir}
	ln, err := lc.Listen("web")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go serveHello(ln)

	// The daemon's part.
	daemon, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, native.ClientSocket), Net: "unix"})
	if err != nil {
		log.Fatal(err)
	}
	defer daemon.Close()
	go handOver(daemon, dir)

	// The client app.
	d := native.Dialer{Dir: dir}
	conn, err := d.Dial(context.Background(), "shop/frontend/web")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("gopher"))
	conn.(interface{ CloseWrite() error }).CloseWrite() // the server reads EOF
	answer, err := io.ReadAll(conn)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(answer))

	// A service the daemon does not know.
	_, err = d.Dial(context.Background(), "shop/frontend/nothing")
	fmt.Println(errors.Is(err, native.ErrUnknownService))
	// Output:
	// hello, gopher
	// true
}

// serveHello answers each connection with "hello, " and what the client
// sent up to its half-close.
func serveHello(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			name, _ := io.ReadAll(c)
			fmt.Fprintf(c, "hello, %s", name)
		}()
	}
}

// handOver is a toy node daemon: it hands every client a connection to
// the server's socket of the service it names, or refuses. meshlessd
// also applies access control, picks among instances, and relays when
// the server is not on the node.
func handOver(ln *net.UnixListener, dir string) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		req, err := native.ReadRequest(c)
		if err != nil {
			native.WriteReply(c, native.Reply{Status: native.StatusFor(err), Message: err.Error()})
			c.Close()
			continue
		}
		server, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: filepath.Join(dir, "server", req.Service), Net: "unix"})
		if err != nil {
			native.WriteReply(c, native.Reply{Status: native.StatusUnknownService, Message: req.String()})
			c.Close()
			continue
		}
		if err := native.WriteReply(c, native.Reply{Handoff: true}); err == nil {
			native.SendConn(c, server)
		}
		// Both copies go: the client now owns the connection.
		server.Close()
		c.Close()
	}
}

// An app calls the service "web" of the Meshlet "frontend" in namespace
// "shop" (which its own Meshlet lists among its clients).
func ExampleDial() {
	conn, err := native.Dial(context.Background(), "shop/frontend/web")
	if errors.Is(err, native.ErrAllFull) {
		log.Fatal("every instance of web is at its maxConn; try later")
	}
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\n\r\n")
	io.Copy(os.Stdout, conn)
}

// An app serves "web", a service of its Meshlet: Meshless sends it the
// connections of native clients and of plain TCP clients of the
// Kubernetes Service "web" alike.
func ExampleListen() {
	ln, err := native.Listen("web") // /meshlet/server/web
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}
