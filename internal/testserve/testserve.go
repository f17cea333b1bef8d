// Package testserve runs the accept loop of a test's stand-in server:
// each connection handled on a goroutine of its own, everything closed and
// waited for when the test ends.
//
// It imports the standard library only.
package testserve

import (
	"net"
	"sync"
	"testing"
)

// Serve accepts on ln until the test ends and runs handle on each
// connection, then closes it. At cleanup it closes ln and waits for every
// handler to return.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
}
