package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultHalfOpenTimeout bounds how long one direction may stay open after the
// other has finished. BuildKit's HTTP/2 streams close both ways together, so a
// long-lived half-open pair means a peer that went away without a FIN.
const DefaultHalfOpenTimeout = time.Minute

// Result reports what a Join moved and why it ended.
type Result struct {
	BytesAToB int64
	BytesBToA int64
	// Err is the first copy error that is not ordinary connection noise
	// (see IsNoise), naming its direction; nil on a clean close.
	Err error
	// Reason says how the pair ended, for the one log line of a closed
	// connection: "<aName>_closed" or "<bName>_closed" (that side ended its
	// stream first; the other followed), "half_open_timeout" (the other
	// never did and was reaped), "cancelled" (ctx ended: a shutdown), or
	// "error" (Err says what).
	Reason string
}

type closeWriter interface{ CloseWrite() error }

// joins counts the Joins the process has begun: a process-wide figure, like
// lent, read by what watches the process's memory (internal/memtrim, which
// returns memory to the OS once a burst of new connections has passed).
var joins atomic.Int64

// Joins is how many Joins this process has begun.
func Joins() int64 { return joins.Load() }

// copied counts the bytes every copy of the process has written.
var copied atomic.Int64

// Copied is how many bytes the process's copies have written: bytes
// flowing, for what should wait for a quiet moment (memtrim).
func Copied() int64 { return copied.Load() }

// Join copies a→b and b→a until both directions end, the half-open bound
// passes, or ctx is done; then it closes both connections. halfOpen <= 0 uses
// DefaultHalfOpenTimeout. aName and bName label the directions in errors.
//
// The two directions run as copyAToB (a goroutine of its own) and copyBToA
// (in the caller's goroutine), so a goroutine dump says which one a stuck
// copy is: a is the first connection given (the client at the gateway, the
// local one at connect, the gateway's at an engine).
func Join(ctx context.Context, a, b net.Conn, aName, bName string, halfOpen time.Duration) Result {
	p := begin(ctx, a, b, halfOpen)
	p.done = make(chan half, 1)
	// One direction runs here: an idle connection costs one goroutine
	// stack less.
	go p.copyAToB()
	ba := p.copyBToA()
	ab := <-p.done
	return p.end(ctx, &ab, &ba, aName, bName)
}

// Start is Join for a caller that does not wait for the pair to end: both
// directions run on goroutines of their own (runAToB, runBToA), and the one
// that ends last closes both connections and calls done with the Result.
// The caller's goroutine (the gateway's handler, which a handshake grows)
// can return once the stream has begun. A direction whose source is a TLS
// connection over a Gathered socket parks while it is idle (park.go): no
// goroutine at all, where a blocked read kept one, and its stack, for the
// connection's idle life.
func Start(ctx context.Context, a, b net.Conn, aName, bName string, halfOpen time.Duration, done func(Result)) {
	s := &started{ctx: ctx, p: begin(ctx, a, b, halfOpen), aName: aName, bName: bName, done: done}
	s.running.Store(2)
	s.ab = direction{s: s, aToB: true, dst: b, src: a}
	s.ba = direction{s: s, dst: a, src: b}
	s.ab.other, s.ba.other = &s.ba, &s.ab
	go s.runAToB()
	go s.runBToA()
}

// begin counts a new pair and readies it; when ctx ends, a deadline in the
// past makes both copies' pending reads and writes return.
func begin(ctx context.Context, a, b net.Conn, halfOpen time.Duration) *pair {
	joins.Add(1)
	if halfOpen <= 0 {
		halfOpen = DefaultHalfOpenTimeout
	}
	p := &pair{a: a, b: b, halfOpen: halfOpen, firstAB: -1}
	p.stop = context.AfterFunc(ctx, func() { p.expire() })
	return p
}

// end closes the pair once both directions have ended, and says how it went.
func (p *pair) end(ctx context.Context, ab, ba *half, aName, bName string) Result {
	p.stop()
	if p.reap != nil {
		p.reap.Stop()
	}
	p.b.Close()
	p.a.Close()
	return p.result(ctx, ab, ba, aName, bName)
}

// result is what the pair's Join returns. It is a function of its own, not
// part of Join, whose frame stays under a copy for the connection's life:
// the smaller the blocked frames, the smaller the stack the runtime can
// shrink an idle connection's goroutine to.
func (p *pair) result(ctx context.Context, ab, ba *half, aName, bName string) Result {
	var res Result
	record := func(h *half, dir string) {
		if h.err != nil && !IsNoise(h.err) && res.Err == nil {
			res.Err = fmt.Errorf("copy %s: %w", dir, h.err)
		}
	}
	res.BytesAToB, res.BytesBToA = ab.n, ba.n
	// The first to fail is reported; the one that failed first is not
	// known here, so a->b, the request, is preferred.
	record(ab, aName+"->"+bName)
	record(ba, bName+"->"+aName)
	switch {
	case ctx.Err() != nil:
		res.Reason = "cancelled"
	case res.Err != nil:
		res.Reason = "error"
	case p.reaped.Load():
		res.Reason = "half_open_timeout"
	case p.firstAB == 1:
		res.Reason = aName + "_closed"
	default:
		res.Reason = bName + "_closed"
	}
	return res
}

// pair is one Join's two connections. Whichever direction finishes first
// arms the half-open reaper for the other.
type pair struct {
	a, b     net.Conn
	halfOpen time.Duration
	stop     func() bool // ends ctx's hook on the pair
	done     chan half   // copyAToB's result (Join's)
	ended    atomic.Int32
	reap     *time.Timer // set by the first direction to end, read after both
	firstAB  int         // set by the first direction to end: 1 if a->b, 0 if b->a; read after both
	reaped   atomic.Bool // the half-open reaper fired
	expired  atomic.Bool // ctx ended or the reaper fired: a timeout is the end
}

// expire ends the pair's pending reads and writes.
func (p *pair) expire() {
	p.expired.Store(true)
	expire(p.a, p.b)
}

type half struct {
	n   int64
	err error
}

// finished arms the reaper if the other direction (not aToB) is still
// running.
func (p *pair) finished(aToB bool) {
	if p.ended.Add(1) == 1 {
		p.firstAB = 0
		if aToB {
			p.firstAB = 1
		}
		p.reap = time.AfterFunc(p.halfOpen, func() {
			p.reaped.Store(true)
			p.expire()
		})
	}
}

// copyAToB copies from a to b, then half-closes b. It runs in its own
// goroutine.
func (p *pair) copyAToB() {
	n, err := p.copyHalf(p.b, p.a, true)
	p.done <- half{n, err}
}

// copyBToA copies from b to a, then half-closes a. It runs in Join's
// goroutine.
func (p *pair) copyBToA() half {
	n, err := p.copyHalf(p.a, p.b, false)
	return half{n, err}
}

// copyHalf copies src to dst until src ends, then passes the EOF on:
// half-closes dst so its peer sees the end of input while the other
// direction keeps flowing.
func (p *pair) copyHalf(dst, src net.Conn, aToB bool) (int64, error) {
	n, err := copyStream(dst, src)
	return n, p.passEnd(dst, aToB, err)
}

// passEnd passes the end of a direction's source on to dst.
func (p *pair) passEnd(dst net.Conn, aToB bool, err error) error {
	// Noted before the half-close passes the end on: the other direction's
	// peer may answer the EOF by ending its own stream at once, and that
	// direction must not be taken for the first to end (which it was, now
	// and then, when this goroutine lost the CPU between the two).
	p.finished(aToB)
	if cw, ok := dst.(closeWriter); ok {
		if cerr := cw.CloseWrite(); cerr != nil && err == nil && !IsNoise(cerr) {
			err = cerr
		}
	} else {
		dst.Close()
	}
	return err
}

// expire ends pending reads and writes on conns at once. The transport under
// a TLS connection is closed outright: otherwise the half-close or Close that
// follows would spend up to 5 s sending close_notify to a peer that is not
// reading.
func expire(conns ...net.Conn) {
	past := time.Unix(1, 0)
	for _, c := range conns {
		c.SetDeadline(past)
		if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
			if nc := tc.NetConn(); nc != nil { // nil: a wrapper not settled on one
				nc.Close()
			}
		}
	}
}

// IsNoise says whether err is the ordinary end of a connection (closed,
// reset, broken pipe, not connected any more, reaped by a deadline) rather than a fault worth an
// error line.
func IsNoise(err error) bool {
	return err == nil ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		// shutdown(2) for a half-close after the peer has already gone:
		// what buildctl's normal exit leaves (it was a WARN on every build).
		errors.Is(err, syscall.ENOTCONN) ||
		errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.ECONNABORTED) ||
		isTimeout(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
