package ctxwait

import (
	"context"
	"errors"
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
