// Package ctxwait waits — for a duration, for a byte — unless a context
// ends first.
//
// It imports the standard library only.
package ctxwait

import (
	"context"
	"io"
	"net"
	"time"
)

// Sleep waits d, or until ctx ends; then it returns ctx's cause.
func Sleep(ctx context.Context, d time.Duration) error {
	return SleepOr(ctx, d, nil)
}

// SleepOr is Sleep that also ends, with nil, as soon as wake delivers
// (a nil wake never does).
func SleepOr(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-wake:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// ReadByte reads one byte from c, unless ctx ends first: then a read
// deadline in the past ends the read, without closing c (crypto/tls too
// takes a timeout as not sticky), and the error is ctx's cause. Any
// deadline ReadByte set is cleared before it returns.
func ReadByte(ctx context.Context, c net.Conn) (byte, error) {
	expired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(expired)
		c.SetReadDeadline(time.Unix(1, 0))
	})
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	if !stop() {
		<-expired
		c.SetReadDeadline(time.Time{})
	}
	switch {
	case err == nil:
		return b[0], nil
	case ctx.Err() != nil:
		return 0, context.Cause(ctx)
	}
	return 0, err
}
