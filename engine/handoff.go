package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ProtoHandoff is, on the unix front only, a stream the engine hands over
// instead of carrying: it dials its engine process's socket and passes that
// connection itself to the gateway (SCM_RIGHTS), which then reads and
// writes BuildKit's socket directly. The front's connection stays open as
// the stream's lease: the engine counts the stream (busy, drain, /status)
// until the gateway closes it. A local engine thus costs no process hop
// and no copy of its own on the data path; the gateway, which runs it as
// its own child and user, could open that socket anyway.
const ProtoHandoff = "wakegate-handoff/1"

// handOff passes a connection to the engine process to the unix front's
// peer c, then holds c until the peer closes it or ctx ends. The caller
// counts the stream while this runs.
func (e *Engine) handOff(ctx context.Context, c net.Conn) {
	defer c.Close()
	bc := e.sendBackend(ctx, c)
	if bc == nil {
		return
	}
	bc.Close() // the peer holds its own copy now
	e.holdLease(ctx, c)
}

// sendBackend dials the engine process and sends that connection to c's
// peer, and returns the engine's own copy of it (to close); nil, logged,
// if it could not.
func (e *Engine) sendBackend(ctx context.Context, c net.Conn) *net.UnixConn {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		e.cfg.Log.Error("connection closed: a handoff needs the unix front")
		return nil
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", e.cfg.Backend.Socket())
	if err != nil {
		e.cfg.Log.Error("connection closed: engine socket unreachable", "err", err)
		return nil
	}
	bc := nc.(*net.UnixConn)
	if err := sendConn(uc, bc); err != nil {
		bc.Close()
		e.cfg.Log.Warn("connection closed: handoff failed", "err", err)
		return nil
	}
	return bc
}

// holdLease holds a handed-over stream's lease c until the peer closes it
// or ctx ends.
func (e *Engine) holdLease(ctx context.Context, c net.Conn) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	// Nothing more comes on c: its end is the stream's.
	io.Copy(io.Discard, io.LimitReader(c, 1))
}

// sendConn sends conn's descriptor over uc, with one byte to carry it.
func sendConn(uc, conn *net.UnixConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := rc.Control(func(fd uintptr) {
		_, _, werr = uc.WriteMsgUnix([]byte{1}, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return err
	}
	return werr
}

// handedConn is a stream an engine handed over: the engine process's own
// socket, read and written directly, and the unix front connection that
// keeps it counted at the engine until Close.
type handedConn struct {
	*net.UnixConn
	lease net.Conn
}

// Socket is the engine process's socket itself: reads are its own
// (proxy.Socketer), so a copy from it waits on the socket with no buffer.
func (h *handedConn) Socket() net.Conn { return h.UnixConn }

func (h *handedConn) Close() error {
	err := h.UnixConn.Close()
	h.lease.Close()
	return err
}

// dialHandoff opens a unix front connection at path carrying proto (a
// handoff) and returns the stream the engine hands over on it.
func dialHandoff(ctx context.Context, path, proto string) (*handedConn, error) {
	lease, err := dialUnix(ctx, path, proto)
	if err != nil {
		return nil, err
	}
	h, err := receiveConn(ctx, lease)
	if err != nil {
		lease.Close()
		return nil, fmt.Errorf("dial engine %s: %w", path, err)
	}
	return h, nil
}

// receiveConn reads the descriptor an engine sends on lease (its unix
// front, after ProtoHandoff) within ctx, and returns the stream.
func receiveConn(ctx context.Context, lease net.Conn) (*handedConn, error) {
	uc, ok := lease.(*net.UnixConn)
	if !ok {
		return nil, errors.New("a handoff needs a unix socket")
	}
	// The engine answers once it is ready (it holds streams that come
	// before): ctx bounds that, as it bounds a proxied stream's dial.
	stop := context.AfterFunc(ctx, func() { uc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var b [1]byte
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(b[:], oob)
	if err != nil || n == 0 {
		if err == nil {
			err = io.EOF
		}
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, fmt.Errorf("engine handed over no stream (not ready, or its engine socket unreachable): %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("engine handoff: no descriptor (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("engine handoff: want one descriptor, got %d (%v)", len(fds), err)
	}
	unix.CloseOnExec(fds[0]) // not inherited by the engines the gateway starts
	f := os.NewFile(uintptr(fds[0]), "engine-stream")
	nc, err := net.FileConn(f)
	f.Close() // FileConn made its own copy
	if err != nil {
		return nil, fmt.Errorf("engine handoff: %w", err)
	}
	data, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("engine handoff: a %T, not a unix socket", nc)
	}
	return &handedConn{UnixConn: data, lease: lease}, nil
}
