package connect

import (
	"crypto/tls"
	"errors"
	"syscall"
)

// stillOpen says whether an unused spare's socket is still open with nothing
// unread, without waiting: a close (FIN or reset) or anything the gateway
// sent after settle (an alert) makes it unfit to carry a client. It peeks
// at the socket itself: a read through crypto/tls with a deadline in the
// past returns before it looks.
func stillOpen(c *tls.Conn) bool {
	sc, ok := c.NetConn().(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	empty := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		empty = errors.Is(rerr, syscall.EAGAIN)
		return true // never wait
	})
	return err == nil && empty
}
