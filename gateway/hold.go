package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

// holdBufferSize bounds what the gateway reads from a client it holds for an
// engine. A BuildKit client (gRPC over HTTP/2) opens with its preface,
// SETTINGS and first requests, a few hundred bytes, and can send no more
// than HTTP/2's initial 64 KiB window before the engine answers. A client
// that fills the buffer is no longer watched; the rest of its bytes wait in
// the kernel as they did before there was a watcher.
const holdBufferSize = 64 << 10

// errClientLeft says that a held client went away before its engine was
// ready.
var errClientLeft = errors.New("client left while held")

// watcher reads a held client while the gateway waits for its engine, so
// that a client that leaves is let go at once (its descriptor freed, its
// place in the pool given back, no engine dialled for it) rather than when
// the engine is ready, and so that what it sent meanwhile is kept for the
// engine.
//
// When is a held client gone? A TLS connection ends its sending side with
// close_notify, which reads as EOF both when the client only half-closes
// (tls.Conn.CloseWrite, as the connect sidecar does after its input ends:
// it still reads the answer) and when it closes the connection. So:
//
//   - a read error other than EOF (a reset, a truncated record) is a
//     departure;
//   - EOF before any byte is a departure: a client that sent nothing has
//     nothing to ask an engine;
//   - EOF after bytes is a half-close only while the transport stays open:
//     a half-closing TLS client sends close_notify alone, while one that
//     closes sends close_notify and a TCP FIN (or a reset) right behind it.
//     The watcher then reads the TCP connection under TLS: a FIN, a reset,
//     or any byte (nothing may follow close_notify) is a departure; while
//     it blocks, the client waits for its answer and its bytes are
//     forwarded, followed by the half-close, once the engine is ready.
type watcher struct {
	tc       *tls.Conn
	log      *slog.Logger
	stopping atomic.Bool   // set by stop before it expires the read
	gone     chan struct{} // closed when the client has left
	done     chan struct{} // closed when run returns

	// to, if set, is the client's stream to its waking engine: what the
	// client sends goes on there too as it comes (early.go). run alone
	// uses it until done is closed.
	to *earlyStream

	// Written by run before done is closed; read after.
	buf        []byte // what the client sent
	halfClosed bool   // the client sent close_notify after buf; its transport is open
	err        error  // why the client is gone
}

// watch watches tc, its buffer beginning with held (what was read from
// the client before); what it reads goes on to to too, if set.
func watch(tc *tls.Conn, log *slog.Logger, held []byte, to *earlyStream) *watcher {
	w := &watcher{tc: tc, log: log, to: to, gone: make(chan struct{}), done: make(chan struct{})}
	go w.run(held)
	return w
}

func (w *watcher) run(held []byte) {
	defer close(w.done)
	buf := append(make([]byte, 0, max(512, len(held))), held...)
	for len(buf) < holdBufferSize && !w.stopping.Load() {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), holdBufferSize-len(buf)))
		}
		n, err := w.tc.Read(buf[len(buf):min(cap(buf), holdBufferSize)])
		buf = buf[:len(buf)+n]
		if w.to != nil {
			w.to.write(buf[len(buf)-n:], w.log)
		}
		switch {
		case err == nil:
			continue
		case w.stopped(err):
		case err == io.EOF && len(buf) > 0:
			w.halfClosed = true
			w.log.Debug("held client ended its request (close_notify); holding it while its transport stays open", "bytes_held", len(buf))
			w.watchTransport()
		default:
			w.leave(err)
		}
		break
	}
	w.buf = buf
}

// watchTransport waits on the TCP connection under a client that sent
// close_notify: anything it reads there means the client is gone.
func (w *watcher) watchTransport() {
	var b [1]byte
	n, err := w.tc.NetConn().Read(b[:])
	switch {
	case n > 0:
		w.leave(errors.New("bytes after close_notify"))
	case w.stopped(err):
	default:
		w.leave(err)
	}
}

func (w *watcher) stopped(err error) bool {
	return w.stopping.Load() && errors.Is(err, os.ErrDeadlineExceeded)
}

func (w *watcher) leave(err error) {
	if err == io.EOF {
		err = fmt.Errorf("%w: closed", errClientLeft)
	} else {
		err = fmt.Errorf("%w: %w", errClientLeft, err)
	}
	w.err = err
	close(w.gone)
}

// stop ends the watch and returns what the client sent, or why it is gone.
// A read deadline in the past ends the pending read without closing the
// connection or losing a partly read TLS record (a timeout is not sticky
// in crypto/tls); the deadline is then cleared for the proxy.
func (w *watcher) stop() ([]byte, error) {
	w.stopping.Store(true)
	w.tc.SetReadDeadline(time.Unix(1, 0))
	<-w.done
	w.tc.SetReadDeadline(time.Time{})
	return w.buf, w.err
}

// held is what acquireHeld leased for a client.
type held struct {
	eng   *Engine
	lease *Lease
	// early is what the client sent while held, after what the caller had
	// read already; stream, if set, is the client's stream to the engine,
	// dialled while it started, with early[:stream.sent] written on it.
	early  []byte
	stream *earlyStream
}

// acquireHeld leases an engine for a's key while watching its client;
// first is what was read from the client already. If the client leaves
// first, the acquire is abandoned (a wait for a free engine ends, a
// session reserved for it is given back) and the error wraps
// errClientLeft. Otherwise it returns what the client sent (first first),
// to be forwarded before the rest of the stream, and the stream dialled
// while the engine started, if one was (early.go).
func (s *Server) acquireHeld(a *admitted, first []byte) (held, error) {
	// The engine running (most connections): nothing to hold the client
	// for, so neither a goroutine to acquire nor one to watch it, whose
	// start and stop would cost a new connection wake-ups of its own.
	if e, l, ok := s.cfg.Pool.TryAcquire(a.key); ok {
		return held{eng: e, lease: l, early: first}, nil
	}
	tc, key, log := a.tc, a.key, a.log
	actx, cancel := a.hold()
	defer cancel()
	result := make(chan acquired, 1)
	started := make(chan string, 1)
	var hostStarted func(addr string)
	if s.cfg.EarlyStreams != nil {
		hostStarted = func(addr string) {
			if s.cfg.EarlyStreams(addr) {
				select {
				case started <- addr:
				default:
				}
			}
		}
	}
	go func() {
		e, l, err := s.cfg.Pool.acquire(actx, key, log, hostStarted)
		result <- acquired{e, l, err}
	}()
	w := watch(tc, log, first, nil)
	var (
		r      acquired
		dial   *earlyDial
		landed <-chan earlyStream // nil unless a dial is under way
		stream *earlyStream
	)
wait:
	for {
		select {
		case r = <-result:
			break wait
		case <-w.gone:
			cancel()
			r = <-result
			break wait
		case addr := <-started:
			if dial == nil {
				dial = dialEarly(actx, s.cfg.Dial, addr, log)
				landed = dial.landed
			}
		case es := <-landed:
			landed = nil
			if es.conn == nil {
				continue
			}
			stream = &es
			// What the client sent so far goes on now, and what it sends
			// next as it comes; the watch keeps every byte for a replay.
			buf, err := w.stop()
			if err != nil {
				cancel()
				r = <-result
				break wait
			}
			stream.write(buf, log)
			if !stream.lost {
				log.Debug("held client's stream sent to its engine while it starts", "addr", stream.addr, "bytes", len(buf))
			}
			w = watch(tc, log, buf, stream)
		}
	}
	if landed != nil {
		// Not landed yet: the client left, the wake failed, or the
		// engine is ready already and its stream is made as before (the
		// dial may be waiting out a machine that was not reachable).
		dial.abandon()
	}
	early, err := w.stop()
	if err == nil {
		err = r.err
	}
	if stream != nil && stream.lost {
		stream = nil // closed: its bytes go with the stream made now
	}
	if err != nil {
		// Gone, perhaps just as the engine came: give the lease back
		// unused. Or the wake failed.
		if r.lease != nil {
			r.lease.Release()
		}
		if stream != nil {
			stream.conn.Close()
		}
		return held{}, err
	}
	if stream != nil && stream.addr != r.lease.Addr {
		stream.conn.Close() // not the engine leased: its bytes go again
		stream = nil
	}
	return held{eng: r.engine, lease: r.lease, early: early, stream: stream}, nil
}

// heldConn is a client connection that first replays what the gateway read
// from it while it was held, then reads on.
type heldConn struct {
	*tls.Conn
	early []byte
}

func (c *heldConn) Read(p []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		if len(c.early) == 0 {
			c.early = nil // the watcher's buffer is not kept for the connection's life
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

var _ net.Conn = (*heldConn)(nil)
