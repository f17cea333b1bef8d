package proxy

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// A proxied connection spends most of its life idle (a BuildKit session
// waits between builds, a Dagger client between calls), and a gateway holds
// thousands of them. So a direction holds a copy buffer only while bytes
// flow: io.CopyBuffer's 32 KiB per direction, parked in a blocked Read,
// was most of what an idle connection cost.
const (
	// bufSize is the pooled buffer a direction borrows while bytes flow:
	// four TLS records, written into TLS in one syscall (Gathered) and
	// read from it as they have come. Without gathering, 64 KiB measured
	// slower than 32; with it, faster (docs/performance.md, session 10).
	bufSize = 64 << 10
	// idleBufSize is what a direction that cannot wait without a buffer
	// (a TLS connection: crypto/tls reads into its own buffer) reads into
	// while it may be idle, for the connection's whole idle life. Small
	// messages (HTTP/2 pings, window updates, headers) fit in one read; a
	// larger one fills it, and the rest of its record, already decrypted in
	// the tls.Conn, comes through the pooled buffer at the next read: one
	// more Read and Write, no more syscalls to read it. 512 B rather than
	// 2 KiB took 2–4 KiB off each idle connection at the gateway
	// (scripts/benchpeers, 5,000 connections) at no measurable cost to bulk
	// copies (BenchmarkJoin*).
	idleBufSize = 512
	// maxRecord is the most plaintext one TLS record carries, and so the
	// most a tls.Conn's Read returns at once: a read of exactly this much
	// is a full record, the mark of a bulk transfer.
	maxRecord = 16 << 10
)

var (
	bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}
	// lent counts the pooled buffers borrowed and not yet given back: what
	// the copies of every Join in the process hold at the moment.
	lent atomic.Int64
)

func getBuf() *[]byte {
	lent.Add(1)
	return bufPool.Get().(*[]byte)
}

func putBuf(b *[]byte) {
	lent.Add(-1)
	bufPool.Put(b)
}

// Socketer is a wrapper of a connection that becomes what it wraps: once
// Socket returns a connection, reading the wrapper is reading that
// connection, from then on, and Socket is asked no more. If that is a
// plain socket (a *net.TCPConn or *net.UnixConn, or a Socketer that
// becomes one), a copy from it then waits on the socket itself, holding no
// buffer while idle; anything else (a tls.Conn) the copy reads itself,
// not through the wrapper, which lets it read a tls.Conn's records ahead
// (Gathered), and lets a direction of Start park on it while idle
// (park.go). Socket is asked between reads, from the copy's goroutine.
//
// In a Start, a Read of the wrapper that is waiting may be ended by a read
// deadline in the past once the other direction has gone idle, or written
// (what it wrote may be what settles the wrapper), so that Socket is asked
// again: the wrapper must pass the timeout through with no other effect.
type Socketer interface{ Socket() net.Conn }

// copyStream copies src to dst until src's EOF (a nil error) or a failure.
// A plain socket is waited on without any buffer; anything else (TLS, a
// wrapper) through a small one, with the pooled buffer borrowed while reads
// keep coming back full, until it becomes a plain socket (Socketer).
// Neither allocates per chunk.
func copyStream(dst io.Writer, src net.Conn) (int64, error) {
	if rc := rawConn(src); rc != nil {
		return copyRaw(dst, rc, nil)
	}
	return copyBuffered(dst, src)
}

// rawConn is c's socket if c is one (exact types only: a wrapper that
// embeds a socket promotes SyscallConn but may rewrite what Read returns),
// or what a Socketer says it has become; else nil.
func rawConn(c net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch s := c.(type) {
	case *net.TCPConn:
		sc = s
	case *net.UnixConn:
		sc = s
	case Socketer:
		if sock := s.Socket(); sock != nil && sock != c {
			return rawConn(sock)
		}
		return nil
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// rawReader reads a socket from inside RawConn.Read, taking a pooled buffer
// only once the socket is readable and giving it back as soon as the socket
// has nothing more: an idle direction waits in the poller holding nothing.
type rawReader struct {
	buf *[]byte // held while bytes flow
	n   int
	err error
}

// read is RawConn.Read's callback: false means "nothing yet, wait for the
// socket to be readable".
func (r *rawReader) read(fd uintptr) bool {
	if r.buf == nil {
		r.buf = getBuf()
	}
	for {
		n, err := syscall.Read(int(fd), *r.buf)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			putBuf(r.buf)
			r.buf = nil
			return false
		case nil:
			r.n, r.err = n, nil
		default:
			r.n, r.err = 0, err
		}
		return true
	}
}

// copyRaw copies a plain socket's bytes to dst, waiting on the socket with
// no buffer. wrote, if set, is called after each chunk is written.
func copyRaw(dst io.Writer, rc syscall.RawConn, wrote func()) (written int64, err error) {
	r := &rawReader{}
	read := r.read // bound once: a method value per call would allocate
	defer func() {
		if r.buf != nil {
			putBuf(r.buf)
		}
	}()
	for {
		// Deadlines and Close end the wait (expire relies on it).
		if err := rc.Read(read); err != nil {
			return written, err
		}
		if r.err != nil {
			return written, os.NewSyscallError("read", r.err)
		}
		if r.n == 0 {
			return written, nil // EOF
		}
		m, werr := writeChunk(dst, (*r.buf)[:r.n])
		written += int64(m)
		copied.Add(int64(m))
		if werr != nil {
			return written, werr
		}
		if wrote != nil {
			wrote()
		}
	}
}

// copyBuffered copies through a small buffer while src may be idle, and
// through a pooled one while reads keep coming back full (a full buffer, or
// full TLS records). Each read's bytes are written before the next read,
// so a message is never held back waiting for more input; in a bulk
// transfer, a read from TLS takes the records that have already come too,
// to write them at once.
func copyBuffered(dst io.Writer, src net.Conn) (int64, error) {
	f := newFlow(dst, src)
	err, _ := f.run(nil)
	return f.written, err
}

func newFlow(dst io.Writer, src net.Conn) flow {
	f := flow{dst: dst, src: src, more: readsMore(src)}
	f.becomes, _ = src.(Socketer)
	return f
}

// flow is copyBuffered's state, in a value rather than a goroutine's
// frame: a direction of Start (park.go) stops between reads while its TLS
// source is idle, holding no goroutine, and goes on in a new one when the
// socket is readable.
type flow struct {
	dst     io.Writer
	src     net.Conn
	becomes Socketer  // src, until it has become what it wraps
	more    *Gathered // the socket under src, a tls.Conn: read ahead, and parked on
	idle    *[]byte   // the small buffer, pooled: held while the flow runs
	big     *[]byte   // the pooled copy buffer, held while reads come back full
	// carry is what the idle buffer took of the record that the first read
	// into big finishes.
	carry   int
	written int64
}

var idlePool = sync.Pool{New: func() any { b := make([]byte, idleBufSize); return &b }}

// release gives the flow's buffers back.
func (f *flow) release() {
	if f.idle != nil {
		idlePool.Put(f.idle)
		f.idle = nil
	}
	if f.big != nil {
		putBuf(f.big)
		f.big = nil
	}
}

// run copies until src ends (a nil error) or fails. Given a direction d, it
// may instead park (parked true): src is a TLS connection with nothing
// decrypted or received, and d goes on when its socket is readable; the
// flow then holds no buffer, and must not be touched by the caller.
func (f *flow) run(d *direction) (err error, parked bool) {
	for {
		if f.idle == nil {
			f.idle = idlePool.Get().(*[]byte)
		}
		buf := *f.idle
		if f.big != nil {
			buf = *f.big
		}
		var n int
		var rerr error
		tried := false
		if d != nil && f.big == nil {
			if rc := d.waiting(f); rc != nil {
				return f.rest(rc, d.onSocket()), false
			}
			if f.becomes == nil && f.more != nil {
				// Is there anything? Asked without waiting: crypto/tls may
				// hold a record it read with the last one.
				n, rerr = readMore(f.src, f.more, buf)
				tried = n > 0 || rerr != nil
				if !tried {
					f.release()
					if d.park() {
						return nil, true
					}
					f.idle = idlePool.Get().(*[]byte)
					buf = *f.idle
				}
			}
		}
		if !tried {
			n, rerr = f.src.Read(buf)
		}
		if d != nil {
			rerr = d.read(rerr)
		}
		for f.more != nil && f.big != nil && rerr == nil && len(buf)-n >= maxRecord {
			m, err := readMore(f.src, f.more, buf[n:])
			n, rerr = n+m, err
			if m == 0 {
				break
			}
		}
		if n > 0 {
			m, werr := writeChunk(f.dst, buf[:n])
			f.written += int64(m)
			copied.Add(int64(m))
			if werr != nil {
				f.release()
				return werr, false
			}
			if m != n {
				f.release()
				return io.ErrShortWrite, false
			}
		}
		if rerr != nil {
			f.release()
			if rerr == io.EOF {
				return nil, false
			}
			return rerr, false
		}
		if rc := f.settle(); rc != nil {
			var wrote func()
			if d != nil {
				wrote = d.onSocket()
			}
			return f.rest(rc, wrote), false
		}
		switch {
		case f.big == nil && n == len(buf):
			f.big = getBuf()
			f.carry = n
		case f.big != nil && (n == len(buf) || (f.carry+n)%maxRecord == 0):
			// Full records (the first finishing the idle buffer's).
			f.carry = 0
		case f.big != nil:
			// A short read: src has caught up. Wait in the idle buffer.
			putBuf(f.big)
			f.big, f.carry = nil, 0
		}
	}
}

// settle asks a wrapper whether it has become what it wraps: it is asked
// no more once it has, and read as what it is. A plain socket is returned,
// to be waited on with none of our buffers (rest).
func (f *flow) settle() syscall.RawConn {
	if f.becomes == nil {
		return nil
	}
	sock := f.becomes.Socket()
	if sock == nil {
		return nil
	}
	f.becomes = nil
	if rc := rawConn(sock); rc != nil {
		return rc
	}
	f.src, f.more = sock, readsMore(sock)
	return nil
}

// rest copies the rest from the plain socket the source became.
func (f *flow) rest(rc syscall.RawConn, wrote func()) error {
	f.release()
	n, err := copyRaw(f.dst, rc, wrote)
	f.written += n
	return err
}
