package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wakegate/wakegate/internal/ctxwait"
)

// Streams made ahead of need: a gateway keeps a few connections to a
// running engine open before any client needs one, so that a new stream
// skips the TLS handshake (or, on the unix front, the handoff) to the
// engine. Until the gateway's first byte on it — use, which it sends when
// a client's stream takes the spare — the engine does not count it: an
// unused spare keeps no engine busy, delays no idle stop and is closed as
// the engine begins to stop, so that the gateway never hands it to a
// client.
const (
	// ProtoProxyAhead is ProtoProxy made ahead, on either front: the
	// engine dials its engine process at once too, and closes that
	// connection if the spare ends unused.
	ProtoProxyAhead = "wakegate-proxy-ahead/1"
	// ProtoHandoffAhead is ProtoHandoff made ahead, on the unix front:
	// the engine hands its engine process's socket over at once, and the
	// front connection becomes the stream's lease at use.
	ProtoHandoffAhead = "wakegate-handoff-ahead/1"
)

// use is the gateway's first byte on a spare: a client's stream takes it.
const use = 1

// aheadUnusedTimeout closes a spare that stayed unused this long: twice
// the age at which the gateway retires its spares (gateway's
// engineAheadMaxAge), so that the engine never closes one the gateway may
// still hand out.
const aheadUnusedTimeout = time.Minute

// errSpareUnused ends a spare that was not used.
var errSpareUnused = errors.New("connection made ahead closed unused")

// awaitUse waits, uncounted, for the gateway to use the spare c: its use
// byte within aheadUnusedTimeout, before the engine begins to stop
// (unused ends then).
func awaitUse(unused context.Context, c net.Conn) error {
	wctx, cancel := context.WithTimeoutCause(unused, aheadUnusedTimeout, fmt.Errorf("unused for %s", aheadUnusedTimeout))
	defer cancel()
	b, err := ctxwait.ReadByte(wctx, c)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", errSpareUnused, err)
	case b != use:
		return fmt.Errorf("%w: first byte %d, want %d", errSpareUnused, b, use)
	}
	return nil
}

// counted counts a stream while it is open: busy, /status, idle.
func (e *Engine) counted() (done func()) {
	e.conns.Add(1)
	e.lastStream.Store(time.Now().UnixNano())
	e.markBusy()
	return func() {
		e.markBusy()
		e.conns.Add(-1)
	}
}

// handOffAhead hands the engine process's socket over to the unix front's
// peer c at once, uncounted, and counts c as the stream's lease from its
// use byte until the peer closes it.
//
// Until then the engine keeps its own copy of that socket: if the spare
// ends unused (the engine begins to stop, or its bound), it shuts the
// socket down, which ends it for the peer's copy too. An engine process
// stopping gracefully waits for the connections it accepted (BuildKit's
// gRPC server waits up to two minutes for a client's first bytes), so a
// spare the gateway still held would hold up the stop.
func (e *Engine) handOffAhead(ctx context.Context, c net.Conn) {
	defer c.Close()
	bc := e.sendBackend(ctx, c)
	if bc == nil {
		return
	}
	if err := awaitUse(e.unused, c); err != nil {
		shutdownConn(bc)
		bc.Close()
		return
	}
	bc.Close()
	defer e.counted()()
	e.holdLease(ctx, c)
}

// shutdownConn shuts c's socket down both ways: every descriptor of it,
// in any process, reads its end and cannot write.
func shutdownConn(c *net.UnixConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
}

// Spare is a stream to an engine made ahead of need (DialAhead), not yet
// used: the engine does not count it until Use.
type Spare struct {
	conn  net.Conn // the stream: TLS to the front, or the handed-over socket
	lease net.Conn // the unix front's connection of a handed-over one; nil for TLS
	// judge judges the engine's certificate again at use (stillValid:
	// expiry, revocation): a spare may be used well after its handshake.
	// Nil on the unix front, which has none.
	judge func() error
}

// DialAhead opens a stream to the engine at addr ahead of need
// (ProtoProxyAhead on its TLS front; ProtoHandoffAhead on its unix front,
// whose socket is handed over at once).
func (c *Client) DialAhead(ctx context.Context, addr string) (*Spare, error) {
	if path, ok := strings.CutPrefix(addr, UnixScheme); ok {
		h, err := dialHandoff(ctx, path, ProtoHandoffAhead)
		if err != nil {
			return nil, err
		}
		return &Spare{conn: h, lease: h.lease}, nil
	}
	conn, err := c.dial(ctx, addr, ProtoProxyAhead)
	if err != nil {
		return nil, err
	}
	tc := conn.(*tls.Conn)
	return &Spare{conn: conn, judge: func() error { return stillValid(tc.ConnectionState(), time.Now(), c.IsRevoked) }}, nil
}

// errSpareClosed says a spare was found closed (the engine began to stop,
// or closed it unused) when a stream came to use it.
var errSpareClosed = errors.New("connection made ahead found closed")

// useTimeout bounds the write of the use byte: one byte into an unused
// socket's empty buffer.
const useTimeout = 5 * time.Second

// Use makes the spare a stream, which the engine counts from then, if it
// is still open and its engine's certificate still passes; otherwise it
// is closed and Use says why (the caller dials on demand instead, whose
// handshake refuses an engine that no longer passes).
func (s *Spare) Use() (net.Conn, error) {
	ctl := s.lease
	if ctl == nil {
		ctl = s.conn
	}
	if !peerOpen(s.conn) || !peerOpen(ctl) {
		s.Close()
		return nil, errSpareClosed
	}
	if s.judge != nil {
		if err := s.judge(); err != nil {
			s.Close()
			return nil, fmt.Errorf("connection made ahead refused at use: %w", err)
		}
	}
	ctl.SetWriteDeadline(time.Now().Add(useTimeout))
	_, err := ctl.Write([]byte{use})
	ctl.SetWriteDeadline(time.Time{})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%w: %w", errSpareClosed, err)
	}
	return s.conn, nil
}

// Close closes an unused spare.
func (s *Spare) Close() error { return s.conn.Close() } // a handed-over one closes its lease too

// peerOpen says, without waiting, whether c's peer has not closed or reset
// it. Bytes waiting unread do not matter: an engine process may speak
// first (HTTP/2's settings), and TLS's session tickets come unasked.
func peerOpen(c net.Conn) bool {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	err = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, perr := unix.Poll(fds, 0)
		open = perr == nil && n == 0
	})
	return err == nil && open
}
