package proxy

import (
	"errors"
	"log/slog"
	"net"
	"time"
)

// Accept returns the next connection from ln. On a temporary error (such as
// running out of file descriptors) it backs off, from 5 ms doubling to 1 s,
// and tries again rather than spinning or giving up; it returns any other
// error, and net.ErrClosed once done is closed.
func Accept(ln net.Listener, done <-chan struct{}, log *slog.Logger) (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			return c, nil
		}
		select {
		case <-done:
			return nil, net.ErrClosed
		default:
		}
		if !isTemporary(err) {
			return nil, err
		}
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		log.Warn("accept failed, backing off", "err", err, "backoff", backoff.String())
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-done:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}

func isTemporary(err error) bool {
	if isTimeout(err) {
		return true
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
