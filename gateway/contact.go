package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wakegate/wakegate/proxy"
)

// firstContact watches a proxied pair until the engine's first byte.
//
// An engine can fail after the gateway dialled it and before it answers:
// TLS 1.3 reports a refused certificate only on the client's first read,
// after the dial returned; an engine front whose BuildKit died closes the
// connection; a killed machine resets it. Such an engine never read the
// client's bytes, and a BuildKit engine always speaks first (HTTP/2's
// server preface), so until its first byte the client's bytes are kept
// (up to holdBufferSize, HTTP/2's window) and the connection can be sent
// to a freshly woken engine instead of failing the client's build.
type firstContact struct {
	tc *tls.Conn // the client

	// spares, if set, are asked for again (wakeSoon) once the engine's
	// first answer went on to the client (the engine's next read began),
	// not while the first bytes cross; (*proxied).on asks when the stream ends
	// too. underway, once set, says it was done.
	spares   *engineSpares
	underway atomic.Bool

	// committed is answered, readable without mu: once the engine spoke,
	// the copy loop's reads skip the bookkeeping below.
	committed atomic.Bool

	// The fields below are guarded by mu (the bools last: the struct
	// stays in the 80-byte size class).
	mu       sync.Mutex
	failed   error  // the engine failed before answering
	sent     []byte // client bytes forwarded while the engine had not answered
	answered bool   // the engine sent a byte: the pair is committed
	overflow bool   // sent outgrew holdBufferSize: no replay
	ended    bool   // the client's input ended: the engine may close in answer
}

// pair wraps a client (with its held bytes) and an engine connection for
// proxy.Join.
func (f *firstContact) pair(client *heldConn, ec net.Conn) (net.Conn, net.Conn) {
	return &contactClient{heldConn: client, f: f}, &contactEngine{Conn: ec, f: f}
}

// outcome says, once the copy ended, whether the engine failed before
// answering: then the client's bytes to replay to another engine (nil
// replay: it cannot be replayed), and the client is readied for it.
func (f *firstContact) outcome() (failed error, replay []byte, replayable bool) {
	f.mu.Lock()
	cause, replay, replayable := f.failed, f.sent, f.failed != nil && !f.overflow
	f.mu.Unlock()
	if cause == nil {
		return nil, nil, false
	}
	f.tc.SetReadDeadline(time.Time{}) // the client stays, for the next engine
	return fmt.Errorf("engine failed before answering: %w", cause), replay, replayable
}

func (f *firstContact) goneUnderway() {
	if f.spares != nil && !f.underway.Load() && f.underway.CompareAndSwap(false, true) {
		f.spares.wakeSoon()
	}
}

func (f *firstContact) isFailed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed != nil
}

// engineFailed says whether err, the engine's first read ending with no
// byte, means the engine failed rather than the proxy ending (a deadline at
// shutdown is not the engine's failure). An EOF after the client's own
// input ended is an answer to it, not a failure.
func engineFailed(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error" || // a TLS alert: refused
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

// contactClient records what the client sends until the engine answers.
// Once the engine failed, Join's half-close and close of the client are
// skipped: the client is kept for the next engine.
type contactClient struct {
	*heldConn
	f *firstContact
}

func (c *contactClient) Read(p []byte) (int, error) {
	n, err := c.heldConn.Read(p)
	f := c.f
	if f.committed.Load() {
		return n, err
	}
	f.mu.Lock()
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		// A timeout is not the end of the client's input: a read deadline
		// ends this Read when the engine failed (the client is kept), or
		// when the copy is asked to look again whether this wrapper has
		// become its connection (proxy.Socketer).
		f.ended = true
	}
	if n > 0 && !f.answered && !f.overflow {
		if len(f.sent)+n > holdBufferSize {
			f.overflow, f.sent = true, nil
		} else {
			f.sent = append(f.sent, p[:n]...)
		}
	}
	f.mu.Unlock()
	return n, err
}

// Socket is the client's tls.Conn once the engine answered and the bytes
// read while the client was held went on: from then on Read is the
// tls.Conn's (proxy.Socketer), which a bulk copy reads records ahead on.
// Asked between reads, from the copy's goroutine, as Read is.
func (c *contactClient) Socket() net.Conn {
	if !c.f.committed.Load() || len(c.early) > 0 {
		return nil
	}
	return c.heldConn.Conn
}

var _ proxy.Socketer = (*contactClient)(nil)

func (c *contactClient) CloseWrite() error {
	if c.f.isFailed() {
		return nil
	}
	return c.heldConn.CloseWrite()
}

func (c *contactClient) Close() error {
	if c.f.isFailed() {
		return nil
	}
	return c.heldConn.Close()
}

// contactEngine notices the engine's first byte, or its failure before it.
type contactEngine struct {
	net.Conn
	f *firstContact
}

func (c *contactEngine) Read(p []byte) (int, error) {
	f := c.f
	if f.committed.Load() {
		f.goneUnderway() // the engine's first answer was written to the client
		return c.Conn.Read(p)
	}
	n, err := c.Conn.Read(p)
	f.mu.Lock()
	if !f.answered {
		switch {
		case n > 0:
			f.answered, f.sent = true, nil
			f.committed.Store(true)
		case err != nil && engineFailed(err) && !(f.ended && errors.Is(err, io.EOF)):
			f.failed = err
			// End the other direction now, keeping the client: a read
			// deadline in the past is not sticky in crypto/tls.
			past := time.Unix(1, 0)
			f.tc.SetReadDeadline(past)
			c.Conn.SetWriteDeadline(past)
		}
	}
	f.mu.Unlock()
	return n, err
}

// Socket is the engine's socket once the engine answered and the stream is
// under way: from then on Read is the socket's, and the copy waits on it
// holding no buffer (proxy.Socketer). Asked between reads, so the copy's
// next read begins: the stream is under way.
func (c *contactEngine) Socket() net.Conn {
	if !c.f.committed.Load() {
		return nil
	}
	c.f.goneUnderway()
	return c.Conn
}

var _ proxy.Socketer = (*contactEngine)(nil)

func (c *contactEngine) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

func (c *contactEngine) NetConn() net.Conn {
	if nc, ok := c.Conn.(interface{ NetConn() net.Conn }); ok {
		return nc.NetConn()
	}
	return c.Conn
}
