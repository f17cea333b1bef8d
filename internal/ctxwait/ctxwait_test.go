package ctxwait

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestSleepWaitsOrEndsWithItsContext(t *testing.T) {
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("a sleep that ran out: %v", err)
	}
	cause := errors.New("gateway closing")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	began := time.Now()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, cause) {
		t.Fatalf("a sleep whose context ended = %v, want its cause", err)
	}
	if took := time.Since(began); took > time.Minute {
		t.Fatalf("a sleep whose context had ended took %s", took)
	}
}

func TestSleepOrEndsWhenWoken(t *testing.T) {
	wake := make(chan struct{}, 1)
	wake <- struct{}{}
	began := time.Now()
	if err := SleepOr(context.Background(), 10*time.Second, wake); err != nil {
		t.Fatalf("a sleep that was woken: %v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("a woken sleep took %s: the wake-up did not end it", took)
	}
	if len(wake) != 0 {
		t.Fatal("the wake-up was not taken")
	}
}

// TestReadByteReadsOrEndsWithItsContextLeavingTheConnectionOpen: a byte
// that comes is read; a wait that its context ends returns the cause, and
// the connection still reads what comes next, with no deadline left.
func TestReadByteReadsOrEndsWithItsContextLeavingTheConnectionOpen(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go b.Write([]byte{7})
	if got, err := ReadByte(context.Background(), a); err != nil || got != 7 {
		t.Fatalf("ReadByte = %d, %v; want 7", got, err)
	}
	cause := errors.New("draining")
	ctx, cancel := context.WithCancelCause(context.Background())
	go cancel(cause)
	if _, err := ReadByte(ctx, a); !errors.Is(err, cause) {
		t.Fatalf("ReadByte whose context ended = %v, want its cause", err)
	}
	go b.Write([]byte("next"))
	got := make([]byte, 4)
	if _, err := io.ReadFull(a, got); err != nil || string(got) != "next" {
		t.Fatalf("after an ended wait, read %q, %v; want the connection open and no deadline", got, err)
	}
	b.Close()
	if _, err := ReadByte(context.Background(), a); !errors.Is(err, io.EOF) {
		t.Fatalf("ReadByte of a closed connection = %v, want EOF", err)
	}
}
