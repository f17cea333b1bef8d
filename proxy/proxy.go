package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
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
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type closeWriter interface{ CloseWrite() error }

// Join copies a→b and b→a until both directions end, the half-open bound
// passes, or ctx is done; then it closes both connections. halfOpen <= 0 uses
// DefaultHalfOpenTimeout. aName and bName label the directions in errors.
func Join(ctx context.Context, a, b net.Conn, aName, bName string, halfOpen time.Duration) Result {
	if halfOpen <= 0 {
		halfOpen = DefaultHalfOpenTimeout
	}
	defer a.Close()
	defer b.Close()
	// Unblock both copies at once when ctx ends: a deadline in the past makes
	// pending reads and writes return.
	stop := context.AfterFunc(ctx, func() { expire(a, b) })
	defer stop()

	type done struct {
		n   int64
		err error
		dir string
	}
	results := make(chan done, 2)
	copyHalf := func(dst, src net.Conn, dir string) {
		bp := bufPool.Get().(*[]byte)
		n, err := io.CopyBuffer(dst, src, *bp)
		bufPool.Put(bp)
		// Pass the EOF on: half-close dst so its peer sees the end of input
		// while the other direction keeps flowing.
		if cw, ok := dst.(closeWriter); ok {
			if cerr := cw.CloseWrite(); cerr != nil && err == nil && !IsNoise(cerr) {
				err = cerr
			}
		} else {
			dst.Close()
		}
		results <- done{n, err, dir}
	}
	go copyHalf(b, a, aName+"->"+bName)
	go copyHalf(a, b, bName+"->"+aName)

	var res Result
	record := func(d done) {
		if d.dir == aName+"->"+bName {
			res.BytesAToB = d.n
		} else {
			res.BytesBToA = d.n
		}
		if d.err != nil && !IsNoise(d.err) && res.Err == nil {
			res.Err = fmt.Errorf("copy %s: %w", d.dir, d.err)
		}
	}
	record(<-results)
	reap := time.AfterFunc(halfOpen, func() { expire(a, b) })
	record(<-results)
	reap.Stop()
	return res
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
			tc.NetConn().Close()
		}
	}
}

// IsNoise says whether err is the ordinary end of a connection (closed,
// reset, broken pipe, reaped by a deadline) rather than a fault worth an
// error line.
func IsNoise(err error) bool {
	return err == nil ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
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
