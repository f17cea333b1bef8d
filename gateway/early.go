package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/wakegate/wakegate/internal/ctxwait"
)

// A client held for a waking engine has its stream dialled, and what it
// sent written on it, then what it sends next as it comes (the watcher
// forwards it), as soon as the engine's host gave the engine's address:
// while the engine starts rather than after it is ready. The
// engine's front holds a stream that comes before the engine is ready
// until it is, then passes it on at once, so the client's request reaches
// the engine process as the engine becomes ready, alongside the
// readiness probe's answer instead of after it, and no dial is left
// between the two. It does not change what the client sees: its stream
// begins, as before, only once the wake succeeded (a failed wake is
// reported to it, and the early stream closed), and until the engine's
// first byte it is replayed like a stream made ahead of need — if the
// early stream is found closed (an engine front that gave up waiting), it
// is dialled again, once, with every byte.

// earlyRedialMin and earlyRedialMax pace the dials of an early stream to a
// host that gave the address before its engine listens (a machine that is
// still booting): the first dial is at once. Only a dial the address
// refused, could not reach or that timed out is made again; any other
// failure (a handshake the engine refused) ends the early stream, and the
// stream is dialled once the engine is ready, as it was before.
const (
	earlyRedialMin = 5 * time.Millisecond
	earlyRedialMax = 200 * time.Millisecond
)

// earlyWriteTimeout bounds the write of the held bytes on an early
// stream: at most holdBufferSize into a new socket's buffers.
const earlyWriteTimeout = 5 * time.Second

// earlyStream is a held client's stream to its waking engine.
type earlyStream struct {
	addr string
	conn net.Conn
	sent int  // the held bytes already written on conn
	lost bool // a write failed: conn is closed, and its bytes go again
}

// earlyDial is one early stream being dialled.
type earlyDial struct {
	addr   string
	cancel context.CancelFunc
	landed chan earlyStream // one value: conn nil if no dial succeeded
}

// dialEarly dials addr until it answers, fails for good or ctx ends, in a
// goroutine of its own.
func dialEarly(ctx context.Context, dial Dialer, addr string, log *slog.Logger) *earlyDial {
	ctx, cancel := context.WithCancel(ctx)
	d := &earlyDial{addr: addr, cancel: cancel, landed: make(chan earlyStream, 1)}
	go d.run(ctx, dial, log)
	return d
}

func (d *earlyDial) run(ctx context.Context, dial Dialer, log *slog.Logger) {
	pause := earlyRedialMin
	for {
		c, err := dial(ctx, d.addr)
		if err == nil {
			d.landed <- earlyStream{addr: d.addr, conn: c}
			return
		}
		if !notListening(err) {
			if ctx.Err() == nil {
				log.Debug("no stream to the engine while it starts; dialling it once it is ready", "addr", d.addr, "err", err)
			}
			d.landed <- earlyStream{addr: d.addr}
			return
		}
		if ctxwait.Sleep(ctx, pause) != nil {
			d.landed <- earlyStream{addr: d.addr}
			return
		}
		pause = min(2*pause, earlyRedialMax)
	}
}

// notListening says whether a dial's err means that nothing answers at the
// address yet: refused, unreachable, or timed out.
func notListening(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.As(err, &ne) && ne.Timeout()
}

// abandon stops the dial and closes what it landed, without waiting.
func (d *earlyDial) abandon() {
	d.cancel()
	go func() {
		if s := <-d.landed; s.conn != nil {
			s.conn.Close()
		}
	}()
}

// write writes p, the client's next bytes, on the stream, unless a write
// failed before; one that fails loses the stream (closed), whose bytes
// then go with the stream made once the engine is ready.
func (s *earlyStream) write(p []byte, log *slog.Logger) {
	if s.lost || len(p) == 0 {
		return
	}
	s.conn.SetWriteDeadline(time.Now().Add(earlyWriteTimeout))
	_, err := s.conn.Write(p)
	s.conn.SetWriteDeadline(time.Time{})
	if err != nil {
		log.Debug("could not send a held client's bytes to its waking engine; sending them once it is ready", "addr", s.addr, "err", err)
		s.conn.Close()
		s.lost = true
		return
	}
	s.sent += len(p)
}
