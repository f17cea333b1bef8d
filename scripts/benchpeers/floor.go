package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The floors are two relay processes in a row with nothing else on them:
// no TLS, no routing, no accounting — the shape of wakegate-local's path
// (connect and the gateway, two processes, in front of the echo's socket)
// with all of wakegate's own work taken out. What they cost on this
// machine is what any design with connect and the gateway as processes of
// their own pays before it does anything; the report sets them beside the
// new-connection target.
//
//	floor-go:      client ──tcp──▶ relay ──tcp──▶ relay ──unix──▶ echo   (this tool, one goroutine per direction)
//	floor-haproxy: client ──tcp──▶ haproxy ──tcp──▶ haproxy ──unix──▶ echo   (mode tcp, two processes)
var floorOrder = []string{"floor-go", "floor-haproxy"}

// relayEnv, set, makes this tool a floor-go relay: "LISTEN TARGET", the
// target a TCP address or unix:PATH.
const relayEnv = "BENCHPEERS_RELAY"

// relayMain runs a relay process until it is killed.
func relayMain(spec string) error {
	listen, target, ok := strings.Cut(spec, " ")
	if !ok {
		return fmt.Errorf("%s=%q: want \"LISTEN TARGET\"", relayEnv, spec)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	return relay(ln, target)
}

// relay accepts on ln and joins each connection to a new one to target,
// a copy per direction, each direction's end passed on as a half-close.
func relay(ln net.Listener, target string) error {
	network, addr := "tcp", target
	if path, ok := strings.CutPrefix(target, "unix:"); ok {
		network, addr = "unix", path
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			up, err := net.DialTimeout(network, addr, 10*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{})
			go func() {
				io.Copy(up, c)
				closeWrite(up)
				close(done)
			}()
			io.Copy(c, up)
			closeWrite(c)
			<-done
		}()
	}
}

func closeWrite(c net.Conn) {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		hc.CloseWrite()
	}
}

// startFloors runs both floors in front of the echo's socket.
func (b *bench) startFloors(echoSock string) (map[string]*pathInfo, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	goRelay := func(i int, addr, next string) error {
		_, err := b.start(fmt.Sprintf("relay-%d", i), []string{relayEnv + "=" + addr + " " + next}, self)
		return err
	}
	haproxy := func(i int, addr, next string) error {
		cfg := filepath.Join(b.work, fmt.Sprintf("haproxy-floor-%d.cfg", i))
		text := fmt.Sprintf(`global
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen relay
  bind %s
  server next %s
`, addr, next)
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			return err
		}
		_, err := b.start(fmt.Sprintf("haproxy-floor-%d", i), nil, b.opt.haproxy, "-db", "-f", cfg)
		return err
	}
	goAddr, err := chain("unix:"+echoSock, goRelay)
	if err != nil {
		return nil, err
	}
	haAddr, err := chain("unix@"+echoSock, haproxy)
	if err != nil {
		return nil, err
	}
	floors := map[string]*pathInfo{"floor-go": {addr: goAddr}, "floor-haproxy": {addr: haAddr}}
	for name, f := range floors {
		if err := echoOnce(f.addr); err != nil {
			return nil, fmt.Errorf("first connection through %s: %w (see %s)", name, err, b.work)
		}
	}
	return floors, nil
}

// chain starts two relays in a row, the one nearer the echo (next) first,
// and returns the address of the client's; launch starts relay i
// listening on addr and passing on to next.
func chain(next string, launch func(i int, addr, next string) error) (string, error) {
	for i := 2; i >= 1; i-- {
		addr, err := freePort()
		if err != nil {
			return "", err
		}
		if err := launch(i, addr, next); err != nil {
			return "", err
		}
		if err := waitListening(addr, 10*time.Second); err != nil {
			return "", err
		}
		next = addr
	}
	return next, nil
}
