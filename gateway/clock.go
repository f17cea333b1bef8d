package gateway

import (
	"context"
	"github.com/wakegate/wakegate/internal/ctxwait"
	"time"
)

// Clock is the engine state machine's time and concurrency: the real one
// for the gateway, a virtual one for 'wakegate simulate', which drives this
// same code over a CI trace. Every goroutine the state machine starts goes
// through Go, every wait through Wait or Sleep, and every channel others
// wait on is closed through Close, so a virtual clock knows when all of
// them are blocked and time may advance.
type Clock interface {
	Now() time.Time
	// AfterFunc runs f after d.
	AfterFunc(d time.Duration, f func()) Timer
	// Go runs f in a goroutine.
	Go(f func())
	// Wait blocks until ch is closed (nil) or ctx ends (its error).
	Wait(ctx context.Context, ch <-chan struct{}) error
	// Close closes ch, waking its waiters.
	Close(ch chan struct{})
	// Sleep blocks for d, or until ctx ends.
	Sleep(ctx context.Context, d time.Duration) error
}

// Timer is a pending AfterFunc.
type Timer interface{ Stop() bool }

// RealClock is wall-clock time and plain goroutines.
type RealClock struct{}

func (RealClock) Now() time.Time                            { return time.Now() }
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
func (RealClock) Go(f func())                               { go f() }
func (RealClock) Close(ch chan struct{})                    { close(ch) }

func (RealClock) Wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (RealClock) Sleep(ctx context.Context, d time.Duration) error { return ctxwait.Sleep(ctx, d) }
