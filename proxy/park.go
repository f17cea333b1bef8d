package proxy

import (
	"context"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// kickAfter is how long after one direction of a stream parked the other,
// still waiting in a wrapper (the gateway's client side before its engine
// answered), is woken to ask it again whether it has become its TLS
// connection, so that it can park too. Later than the reply that settled
// it, which is still crossing the processes downstream then.
const kickAfter = 100 * time.Millisecond

// started is one Start: its pair, its two directions and what follows
// them.
type started struct {
	ctx          context.Context
	p            *pair
	ab, ba       direction
	running      atomic.Int32
	aName, bName string
	done         func(Result)
}

// direction is one direction of a Start. While its source is a TLS
// connection with nothing received, it parks: it holds no goroutine and
// no buffer, only its place in the poller (poller_linux.go), which goes on
// with it in a new goroutine once the socket is readable, closed, or given
// a read deadline. An idle stream through the gateway costs its two
// goroutines' stacks (8 KiB) less.
type direction struct {
	s    *started
	aToB bool
	f    flow
	h    half
	dst  net.Conn // f's, as a connection: the end is passed on to it
	// src is the source as given: what a kick sets a read deadline on.
	src    net.Conn
	other  *direction
	resume func() // run, bound once
	// inWrapper says it waits in a wrapper's Read, which a kick may end
	// to ask the wrapper again whether it has settled.
	inWrapper atomic.Bool
	// kicked says a read deadline in the past was set to end a wait in a
	// wrapper; the timeout it brings is not the stream's end.
	kicked    atomic.Bool
	kickArmed atomic.Bool
}

func (s *started) runAToB() { s.ab.start() }
func (s *started) runBToA() { s.ba.start() }

func (d *direction) start() {
	if rc := rawConn(d.src); rc != nil {
		n, err := copyRaw(d.dst, rc, d.onSocket())
		d.finish(n, err)
		return
	}
	d.f = newFlow(d.dst, d.src)
	d.resume = d.run
	d.run()
}

// run copies until the source ends, or parks; the poller calls it again
// (in a new goroutine) to go on.
func (d *direction) run() {
	err, parked := d.f.run(d)
	if parked {
		return
	}
	d.finish(d.f.written, err)
}

func (d *direction) finish(n int64, err error) {
	d.h.n, d.h.err = n, d.s.p.passEnd(d.dst, d.aToB, err)
	if d.s.running.Add(-1) == 0 {
		s := d.s
		s.done(s.p.end(s.ctx, &s.ab.h, &s.ba.h, s.aName, s.bName))
	}
}

// waiting readies a read that may wait. A wrapper not yet become what it
// wraps is asked again (the other direction may have settled it since it
// was last asked), and marked as waiting in it, so that the other
// direction, once parked, can kick it. A plain socket it became is
// returned, for the flow to copy the rest from.
func (d *direction) waiting(f *flow) syscall.RawConn {
	if f.becomes == nil {
		return nil
	}
	d.inWrapper.Store(true)
	return f.settle()
}

// read is what a read's error means to the stream: the timeout of a kick
// is none (the deadline is cleared), unless the pair is expiring, whose
// deadline it may be.
func (d *direction) read(err error) error {
	d.inWrapper.Store(false)
	if err != nil && d.kicked.Load() && isTimeout(err) && !d.s.p.expired.Load() {
		d.kicked.Store(false)
		d.src.SetReadDeadline(time.Time{})
		return nil
	}
	return err
}

// park hands the direction to the poller; false if it would not take it
// (the connection closed or given a read deadline, no epoll here): the
// flow then reads as ever. Once it returns true, d may already be running
// again in another goroutine: the caller must return at once.
func (d *direction) park() bool {
	o := d.other
	d.inWrapper.Store(false)
	if !polls.park(d.f.more, d.resume) {
		return false
	}
	o.kickLater()
	return true
}

// onSocket is park's kin for a direction whose source is a plain socket:
// it waits there with a goroutine but no buffer (copyRaw). The other
// direction, if waiting in a wrapper, is kicked as after a park, and
// again after each chunk this one writes (what it wrote may be the
// answer that settles the wrapper): onSocket returns that, for copyRaw.
func (d *direction) onSocket() (wrote func()) {
	d.other.kickLater()
	return d.other.kickLater
}

// kickLater kicks d after kickAfter if it is waiting in a wrapper then.
func (d *direction) kickLater() {
	if d.inWrapper.Load() && d.kickArmed.CompareAndSwap(false, true) {
		time.AfterFunc(kickAfter, d.kick)
	}
}

// kick ends a wait in a wrapper with a read deadline in the past, so that
// the flow asks it again whether it has become its connection.
func (d *direction) kick() {
	d.kickArmed.Store(false)
	if !d.inWrapper.Load() {
		return
	}
	d.kicked.Store(true)
	d.src.SetReadDeadline(time.Unix(1, 0))
}
