package main

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Two relays in a row carry bytes both ways and pass each direction's end
// on, as floor-go runs them in front of the echo's socket.
func TestTwoRelaysCarryBytesAndEnds(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "echo.sock")
	echo, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c) // until the client's end reaches it
				c.Close()
			}()
		}
	}()
	target := "unix:" + sock
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go relay(ln, target)
		target = ln.Addr().String()
	}
	c, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := strings.Repeat("floor", 1000)
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c) // ends only if the echo's end came back through both relays
	if err != nil || string(got) != msg {
		t.Fatalf("read %d bytes, %v; want the %d sent, then the end", len(got), err, len(msg))
	}
}

func TestARelaySaysWhatItWants(t *testing.T) {
	if err := relayMain("127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), `want "LISTEN TARGET"`) {
		t.Fatalf("relayMain without a target = %v, want what it wants", err)
	}
}
