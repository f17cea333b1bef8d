package connect

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wakegate/wakegate/wire"
)

// replayLimit bounds what a stream on a spare keeps of the client's bytes
// until the gateway says it serves the stream: a BuildKit client's opening
// (HTTP/2 preface, settings, first requests) is a few hundred bytes and can
// be no more than HTTP/2's first 64 KiB window before an answer.
const replayLimit = 64 << 10

// errNotServed says the gateway closed a spare unused as the client began
// to use it, and the client's bytes could not all be kept to send again.
var errNotServed = errors.New("the gateway closed the connection made ahead unused, and the client's first bytes were too many to send again")

// aheadStream is the gateway's side of a local connection carried on a
// spare, as proxy.Join sees it. The gateway's first byte on a spare is its
// status (wire.AheadServed or wire.AheadNotServed). Until it comes, what
// the client sends is kept as well as sent; if the gateway did not serve
// the stream — it closed the spare unused (its shutdown, its bound) just as
// the client began, or refused it — none of those bytes reached an engine,
// and the stream moves to a connection dialled on demand, kept bytes
// first. Join never sees the spare's failure.
//
// Each stream on a spare keeps one for its life: its fields are ordered to
// keep it within 80 bytes (TestAheadStreamStaysInItsSizeClass).
type aheadStream struct {
	redial func() (net.Conn, error)

	// underway is called once the stream is under way: the gateway's first
	// reply went on to the client (the next Read began), or the stream
	// ended first. The sidecar makes a new spare then: one made while
	// the first bytes cross would take the CPU from the very stream it
	// replaces, here and at the gateway.
	underway     func()
	underwayDone atomic.Bool

	served  atomic.Bool // status read and cur final: reads and writes go straight through
	replied atomic.Bool // the gateway's first reply was read

	// Guarded by mu, until served.
	overflow    bool // sent outgrew replayLimit
	closedWrite bool // the client's input ended: the replacement is half-closed too
	mu          sync.Mutex
	cur         net.Conn
	sent        []byte
}

func newAheadStream(spare net.Conn, redial func() (net.Conn, error), underway func()) *aheadStream {
	return &aheadStream{cur: spare, redial: redial, underway: underway}
}

func (a *aheadStream) conn() net.Conn {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}

func (a *aheadStream) goneUnderway() {
	if !a.underwayDone.Load() && a.underwayDone.CompareAndSwap(false, true) {
		a.underway()
	}
}

// Read returns the stream's bytes, the status byte taken off first.
func (a *aheadStream) Read(p []byte) (int, error) {
	if !a.served.Load() {
		if err := a.awaitStatus(); err != nil {
			a.goneUnderway()
			return 0, err
		}
	} else if a.replied.Load() {
		a.goneUnderway() // the first reply was written to the client
	}
	n, err := a.cur.Read(p)
	if n > 0 && !a.replied.Load() {
		a.replied.Store(true)
	}
	if err != nil {
		a.goneUnderway()
	}
	return n, err
}

// awaitStatus reads the gateway's status byte. Served, the stream goes on
// on the spare; not served (or the spare closed before its status), it
// moves to a connection dialled on demand, kept bytes sent again.
func (a *aheadStream) awaitStatus() error {
	var st [1]byte
	n, err := a.conn().Read(st[:])
	if n == 1 && st[0] == wire.AheadServed {
		a.mu.Lock()
		a.sent = nil
		a.served.Store(true)
		a.mu.Unlock()
		return nil
	}
	if n == 1 && st[0] != wire.AheadNotServed {
		return fmt.Errorf("connection made ahead: status byte %d from the gateway, want %d or %d", st[0], wire.AheadServed, wire.AheadNotServed)
	}
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		// The proxy ending (a deadline set to end it), not the gateway's
		// answer: nothing to move.
		return err
	}
	// Not served, or closed before the status: the gateway sends "served"
	// before it dials any engine, so nothing reached one.
	if rerr := a.replay(); rerr != nil {
		if err != nil {
			return fmt.Errorf("%w (the spare: %v)", rerr, err)
		}
		return rerr
	}
	return nil
}

// Socket is the connection the stream settled on, once the gateway served
// it and its first reply was read: from then on Read is that
// connection's (proxy.Socketer), which a bulk copy reads records ahead
// on. Asked between reads, so the first reply went on to the client: the
// stream is under way.
func (a *aheadStream) Socket() net.Conn {
	if !a.served.Load() || !a.replied.Load() {
		return nil
	}
	a.goneUnderway()
	return a.cur
}

// NetConn is the socket under the connection the stream settled on, for
// a copy to gather the records of each of its writes; nil until the
// gateway served the stream (it may move to another connection before).
func (a *aheadStream) NetConn() net.Conn {
	if !a.served.Load() {
		return nil
	}
	if nc, ok := a.cur.(interface{ NetConn() net.Conn }); ok {
		return nc.NetConn()
	}
	return nil
}

// replay moves the stream to a connection dialled on demand and sends it
// what the client sent so far.
func (a *aheadStream) replay() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.cur
	defer old.Close()
	if a.overflow {
		return errNotServed
	}
	nc, err := a.redial()
	if err != nil {
		return fmt.Errorf("the gateway closed the connection made ahead unused; on demand: %w", err)
	}
	if len(a.sent) > 0 {
		nc.SetWriteDeadline(time.Now().Add(aheadReplayTimeout))
		_, err = nc.Write(a.sent)
		nc.SetWriteDeadline(time.Time{})
	}
	if err == nil && a.closedWrite {
		err = closeWrite(nc)
	}
	if err != nil {
		nc.Close()
		return fmt.Errorf("send the client's first bytes again: %w", err)
	}
	a.cur, a.sent = nc, nil
	a.served.Store(true)
	return nil
}

// aheadReplayTimeout bounds the write of the kept bytes to the new
// connection: at most replayLimit, into a fresh socket.
const aheadReplayTimeout = 15 * time.Second

// Write sends p; until the status came, p is kept too, and a failed write
// is not the client's failure (Read moves the stream and sends it again).
func (a *aheadStream) Write(p []byte) (int, error) {
	if a.served.Load() {
		return a.cur.Write(p)
	}
	a.mu.Lock()
	if a.served.Load() {
		a.mu.Unlock()
		return a.cur.Write(p)
	}
	keep := !a.overflow
	if keep && len(a.sent)+len(p) > replayLimit {
		a.overflow, a.sent, keep = true, nil, false
	}
	if keep {
		a.sent = append(a.sent, p...)
	}
	c := a.cur
	a.mu.Unlock()
	n, err := c.Write(p)
	if err != nil && keep {
		return len(p), nil
	}
	return n, err
}

// CloseWrite passes the end of the client's input on, to the replacement
// too if the stream moves.
func (a *aheadStream) CloseWrite() error {
	a.mu.Lock()
	a.closedWrite = true
	c := a.cur
	a.mu.Unlock()
	err := closeWrite(c)
	if !a.served.Load() {
		return nil // Read tells
	}
	return err
}

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

func (a *aheadStream) Close() error {
	a.goneUnderway()
	return a.conn().Close()
}

func (a *aheadStream) LocalAddr() net.Addr                { return a.conn().LocalAddr() }
func (a *aheadStream) RemoteAddr() net.Addr               { return a.conn().RemoteAddr() }
func (a *aheadStream) SetDeadline(t time.Time) error      { return a.conn().SetDeadline(t) }
func (a *aheadStream) SetReadDeadline(t time.Time) error  { return a.conn().SetReadDeadline(t) }
func (a *aheadStream) SetWriteDeadline(t time.Time) error { return a.conn().SetWriteDeadline(t) }

var _ net.Conn = (*aheadStream)(nil)
