package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// gatherSize is what a Gathered connection holds while it gathers: a
// copy's chunk (bufSize) cut into TLS records, each with its header, tag
// and content type (22 bytes), the first ones small while crypto/tls sizes
// records up at a connection's start.
const gatherSize = bufSize + 2<<10

var gatherPool = sync.Pool{New: func() any { b := make([]byte, 0, gatherSize); return &b }}

// Gathered is the socket under a tls.Conn, for a bulk copy's syscalls:
//
//   - crypto/tls writes each record of a Write with a syscall of its own (a
//     64 KiB chunk is four); a copy into a TLS connection gathers them, so
//     that a chunk leaves in one write. Outside a copy's chunk (handshakes,
//     alerts, anyone else's writes) writes pass through as they come.
//   - crypto/tls's Read returns one record at a time; a copy from a TLS
//     connection that is reading full records reads on, without waiting,
//     until it has what has come (up to its buffer), and writes it at once.
//     A try that finds nothing (or part of a record) leaves the connection
//     as it was: crypto/tls keeps a temporary error's partial record.
//
// Wrap a connection with it before tls.Client or tls.Server (DialTLS does).
// It costs an idle connection 48 bytes; its buffer is pooled and held only
// while a chunk is written.
type Gathered struct {
	net.Conn
	mu     sync.Mutex
	on     bool
	trying atomic.Bool // Read does not wait: set by the copy reading through it
	buf    *[]byte     // held while on
	try    *tryState   // made at the first try

	// A direction of Start parked on the socket (park.go); guarded by
	// the poller's lock.
	resume       func() // the parked direction's, nil when none
	fd           int32
	hasFD        bool
	registered   bool // in the poller's set (maybe not armed)
	closed       bool
	readDeadline bool // a read deadline is set: nothing parks
}

// tryState is a read that does not wait, made once per connection so
// that a try allocates nothing.
type tryState struct {
	rc   syscall.RawConn
	p    []byte
	n    int
	err  error
	read func(fd uintptr) bool
}

func (t *tryState) do(fd uintptr) bool {
	for {
		t.n, t.err = syscall.Read(int(fd), t.p)
		if t.err != syscall.EINTR {
			return true // never wait
		}
	}
}

// errNothingYet is a try's "the socket has nothing now": temporary, so
// crypto/tls keeps the connection (and any part of a record) as it is.
var errNothingYet error = nothingYet{}

type nothingYet struct{}

func (nothingYet) Error() string   { return "proxy: nothing to read yet" }
func (nothingYet) Timeout() bool   { return true }
func (nothingYet) Temporary() bool { return true }

// Read reads the socket; while trying, without waiting.
func (g *Gathered) Read(p []byte) (int, error) {
	if !g.trying.Load() {
		return g.Conn.Read(p)
	}
	t := g.try
	if t == nil {
		rc, err := g.SyscallConn()
		if err != nil {
			return 0, errNothingYet
		}
		t = &tryState{rc: rc}
		t.read = t.do
		g.try = t
	}
	t.p = p
	err := t.rc.Read(t.read)
	t.p = nil
	switch {
	case err != nil:
		return 0, err
	case t.err == syscall.EAGAIN:
		return 0, errNothingYet
	case t.err != nil:
		return 0, os.NewSyscallError("read", t.err)
	case t.n == 0:
		return 0, io.EOF
	}
	return t.n, nil
}

// readsMore is the Gathered socket under src if src is a tls.Conn itself
// (a wrapper may take a failed try for the end of its stream), or nil.
func readsMore(src net.Conn) *Gathered {
	if tc, ok := src.(*tls.Conn); ok {
		g, _ := tc.NetConn().(*Gathered)
		return g
	}
	return nil
}

// readMore reads into p what src, a tls.Conn over g, has now, decrypted or
// on its socket, without waiting: 0 and nil when it has nothing.
func readMore(src net.Conn, g *Gathered, p []byte) (int, error) {
	g.trying.Store(true)
	n, err := src.Read(p)
	g.trying.Store(false)
	if err == errNothingYet {
		err = nil
	}
	return n, err
}

// Gather wraps c for a TLS connection whose copies gather their writes.
func Gather(c net.Conn) *Gathered { return &Gathered{Conn: c} }

// Write gathers p while a copy writes a chunk, and writes it through
// otherwise (handshakes, alerts).
func (g *Gathered) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.on {
		return g.Conn.Write(p)
	}
	if g.buf == nil {
		g.buf = gatherPool.Get().(*[]byte)
	}
	b := *g.buf
	if len(b)+len(p) > cap(b) {
		if err := g.flushLocked(); err != nil {
			return 0, err
		}
		b = *g.buf
		if len(p) > cap(b) {
			return g.Conn.Write(p)
		}
	}
	*g.buf = append(b, p...)
	return len(p), nil
}

// NetConn is the socket under it.
func (g *Gathered) NetConn() net.Conn { return g.Conn }

// Close wakes a direction parked on the socket, which then reads the
// closed connection, and closes the socket.
func (g *Gathered) Close() error {
	polls.closing(g)
	return g.Conn.Close()
}

// SetDeadline and SetReadDeadline wake a direction parked on the socket:
// its read then waits under the deadline, as it would have.
func (g *Gathered) SetDeadline(t time.Time) error { return polls.deadline(g, t, true) }

func (g *Gathered) SetReadDeadline(t time.Time) error { return polls.deadline(g, t, false) }

// setDeadline sets the socket's read deadline, or both.
func (g *Gathered) setDeadline(t time.Time, both bool) error {
	if both {
		return g.Conn.SetDeadline(t)
	}
	return g.Conn.SetReadDeadline(t)
}

// wakeLocked runs the parked direction, if any, in a new goroutine.
// Called under the poller's lock.
func (g *Gathered) wakeLocked() {
	if r := g.resume; r != nil {
		g.resume = nil
		go r()
	}
}

// fetchFD notes the socket's descriptor, for the poller's set.
func (g *Gathered) fetchFD() bool {
	rc, err := g.SyscallConn()
	if err != nil {
		return false
	}
	if rc.Control(func(fd uintptr) { g.fd = int32(fd) }) != nil {
		return false
	}
	g.hasFD = true
	return true
}

func (g *Gathered) flushLocked() error {
	b := *g.buf
	*g.buf = b[:0]
	if len(b) == 0 {
		return nil
	}
	_, err := g.Conn.Write(b)
	return err
}

func (g *Gathered) begin() {
	g.mu.Lock()
	g.on = true
	g.mu.Unlock()
}

// end writes what was gathered and gives the buffer back.
func (g *Gathered) end() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.on = false
	if g.buf == nil {
		return nil
	}
	err := g.flushLocked()
	gatherPool.Put(g.buf)
	g.buf = nil
	return err
}

// gatherer is the Gathered socket under w (a *tls.Conn, or a wrapper of
// one that says what it writes to with NetConn, nil while it does not
// know), or nil.
func gatherer(w io.Writer) *Gathered {
	for range 4 {
		switch c := w.(type) {
		case *Gathered:
			return c
		case *tls.Conn:
			w = c.NetConn()
		case interface{ NetConn() net.Conn }:
			nc := c.NetConn()
			if nc == nil {
				return nil
			}
			w = nc
		default:
			return nil
		}
	}
	return nil
}

// writeChunk writes p to w, gathered into one write on its socket when w
// writes TLS records to a Gathered one. Asked at each chunk: a wrapper
// may move to another connection before it settles.
func writeChunk(w io.Writer, p []byte) (int, error) {
	if len(p) <= maxRecord {
		return w.Write(p) // one record: one write as it is
	}
	g := gatherer(w)
	if g == nil {
		return w.Write(p)
	}
	g.begin()
	n, err := w.Write(p)
	if ferr := g.end(); err == nil {
		err = ferr
	}
	return n, err
}

// SyscallConn is the socket's, for those that look at it without reading
// (whether a spare is still open).
func (g *Gathered) SyscallConn() (syscall.RawConn, error) {
	sc, ok := g.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// DialTLS dials addr and makes a TLS handshake over the Gathered socket,
// as tls.Dialer does: cfg's ServerName defaults to addr's host, and d's
// Timeout bounds the dial and the handshake together.
func DialTLS(ctx context.Context, d *net.Dialer, addr string, cfg *tls.Config) (*tls.Conn, error) {
	if d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(Gather(raw), cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}
