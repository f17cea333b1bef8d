package testserve

import (
	"io"
	"net"
	"testing"
	"time"
)

func TestServeHandlesEachConnectionAndClosesIt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln, func(c net.Conn) { c.Write([]byte("hi")) })
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c) // ends only if Serve closed the connection
		c.Close()
		if err != nil || string(got) != "hi" {
			t.Fatalf("read %q, %v; want the handler's words, then the close", got, err)
		}
	}
}
