// Command echoengine stands in for buildkitd behind 'wakegate engine
// --engine-cmd' in tests and in 'make bench-peers' ("echoengine {socket}
// [TCPADDR]"): on the unix socket, a connection that opens with HTTP/2's
// preface is BuildKit's control API, answering ListWorkers with one worker
// (the engine's readiness probe) and no build in progress; any other
// connection, there or on TCPADDR (bench-peers' raw loopback path), is
// echoed back byte for byte, half-closing after the client does.
package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	controlapi "github.com/moby/buildkit/api/services/control"
	types "github.com/moby/buildkit/api/types"
	"google.golang.org/grpc"
)

type control struct {
	controlapi.UnimplementedControlServer
}

func (control) ListWorkers(context.Context, *controlapi.ListWorkersRequest) (*controlapi.ListWorkersResponse, error) {
	return &controlapi.ListWorkersResponse{Record: []*types.WorkerRecord{{ID: "echo"}}}, nil
}

// ListenBuildHistory says no build is active: the engine's drain at
// shutdown asks before it stops its engine process.
func (control) ListenBuildHistory(*controlapi.BuildHistoryRequest, controlapi.Control_ListenBuildHistoryServer) error {
	return nil
}

// chanListener hands the gRPC server the connections routed to it.
type chanListener struct {
	conns chan net.Conn
	addr  net.Addr
}

func (l chanListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l chanListener) Close() error   { return nil }
func (l chanListener) Addr() net.Addr { return l.addr }

// prefixConn replays the bytes read to classify the connection.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

var preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

func main() {
	if len(os.Args) < 2 {
		os.Stderr.WriteString("usage: echoengine SOCKET [TCPADDR]\n")
		os.Exit(2)
	}
	os.Remove(os.Args[1])
	ln, err := net.Listen("unix", os.Args[1])
	if err != nil {
		panic(err)
	}
	var tcp net.Listener
	if len(os.Args) > 2 {
		if tcp, err = net.Listen("tcp", os.Args[2]); err != nil {
			panic(err)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() { <-sig; ln.Close(); os.Exit(0) }()
	grpcLn := chanListener{conns: make(chan net.Conn), addr: ln.Addr()}
	srv := grpc.NewServer()
	controlapi.RegisterControlServer(srv, control{})
	go srv.Serve(grpcLn)
	if tcp != nil {
		go func() {
			for {
				c, err := tcp.Accept()
				if err != nil {
					return
				}
				go echo(c, c)
			}
		}()
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			var head []byte
			buf := make([]byte, len(preface))
			for len(head) < len(preface) && bytes.HasPrefix(preface, head) {
				n, err := c.Read(buf[:len(preface)-len(head)])
				head = append(head, buf[:n]...)
				if err != nil {
					break
				}
			}
			pc := prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(head), c)}
			if bytes.Equal(head, preface) {
				grpcLn.conns <- pc
				return
			}
			echo(c, pc)
		}()
	}
}

// echo copies r back to c, then half-closes c.
func echo(c net.Conn, r io.Reader) {
	defer c.Close()
	io.CopyBuffer(c, r, make([]byte, 64<<10))
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
