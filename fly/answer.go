package fly

import (
	"context"
	"fmt"
	"net/http"
	"sync"
)

// lastAnswer keeps what the Machines API last said to one call, across the
// retry layer's attempts, so a call that runs out of time while retrying
// 429s or 5xx says so instead of reading as an API that never answered.
type lastAnswer struct {
	mu       sync.Mutex
	status   int
	attempts int
}

type answerKey struct{}

// withAnswer gives the call a place for the retry layer to record answers.
func withAnswer(ctx context.Context) context.Context {
	return context.WithValue(ctx, answerKey{}, &lastAnswer{})
}

// recordAnswer notes a response; called by the retry layer for each one.
func recordAnswer(r *http.Response) {
	if r == nil || r.Request == nil {
		return
	}
	a, _ := r.Request.Context().Value(answerKey{}).(*lastAnswer)
	if a == nil {
		return
	}
	a.mu.Lock()
	a.status = r.StatusCode
	a.attempts++
	a.mu.Unlock()
}

// answered describes the last failing answer the call got, or "" when it
// got none (or its last answer was a success).
func answered(ctx context.Context) string {
	a, _ := ctx.Value(answerKey{}).(*lastAnswer)
	if a == nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status < 400 {
		return ""
	}
	times := "once"
	if a.attempts > 1 {
		times = fmt.Sprintf("%d times", a.attempts)
	}
	return fmt.Sprintf("%d %s (%s)", a.status, http.StatusText(a.status), times)
}
