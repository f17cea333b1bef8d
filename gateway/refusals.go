package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// refusalLogInterval is how often refusals that were not logged singly are
// summed up in one line.
const refusalLogInterval = 10 * time.Second

// refusal is a kind of refused connection; its name is the key that counts
// it in a summary line.
type refusal string

const (
	refusedHandshake refusal = "handshake_failed" // no certificate of the CA, garbage, a scanner, a timeout
	refusedRevoked   refusal = "revoked"          // a certificate of the CA refused at the handshake (revoked)
	refusedPolicy    refusal = "policy"           // the gateway's policy does not allow the identity
	refusedOverLimit refusal = "over_limit"       // the identity has --max-conns-per-identity open
)

var refusalKinds = []refusal{refusedHandshake, refusedRevoked, refusedPolicy, refusedOverLimit}

// refusalLog logs refused connections without letting a flood of them (a
// scanner, a client retrying in a loop) flood the log: in each interval the
// first refusal of a kind is logged in full (for a client of the CA, the
// first of its kind for each identity: there are only as many as the CA
// issued, and an operator wants to see each), the others are counted, and
// one line at the end of the interval says how many there were.
type refusalLog struct {
	log      *slog.Logger
	clock    Clock
	interval time.Duration

	mu     sync.Mutex          // guards the fields below
	logged map[refusalKey]bool // logged in full in this interval
	counts map[refusal]int     // refusals of this interval not logged singly
	timer  Timer               // ends the interval; nil when none is open
	closed bool                // no more intervals: the server shut down
}

// refusalKey is what is logged in full once an interval: a kind, and the
// identity refused ("" for a handshake without one).
type refusalKey struct {
	kind     refusal
	identity string
}

func newRefusalLog(log *slog.Logger, clock Clock, interval time.Duration) *refusalLog {
	return &refusalLog{log: log, clock: clock, interval: interval, logged: map[refusalKey]bool{}, counts: map[refusal]int{}}
}

// note records one refusal of kind for identity (or ""), logging msg and
// attrs at level if it is the first of its kind and identity in this
// interval.
func (r *refusalLog) note(kind refusal, identity string, level slog.Level, msg string, attrs ...any) {
	key := refusalKey{kind, identity}
	r.mu.Lock()
	first := !r.logged[key]
	if first {
		r.logged[key] = true
	} else {
		r.counts[kind]++
	}
	if r.timer == nil && !r.closed {
		r.timer = r.clock.AfterFunc(r.interval, r.endInterval)
	}
	r.mu.Unlock()
	if first {
		r.log.Log(context.Background(), level, msg, attrs...)
	}
}

// endInterval summarises the interval that ends and opens the next on the
// next refusal.
func (r *refusalLog) endInterval() {
	r.mu.Lock()
	if r.closed {
		// close summarised it already.
		r.mu.Unlock()
		return
	}
	counts := r.resetLocked()
	r.mu.Unlock()
	r.summarise(counts)
}

// close summarises what is pending and stops the interval timer. Safe to
// call twice.
func (r *refusalLog) close() {
	r.mu.Lock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
	counts := r.resetLocked()
	r.mu.Unlock()
	r.summarise(counts)
}

func (r *refusalLog) resetLocked() map[refusal]int {
	counts := r.counts
	r.counts = map[refusal]int{}
	r.logged = map[refusalKey]bool{}
	r.timer = nil
	return counts
}

func (r *refusalLog) summarise(counts map[refusal]int) {
	total := 0
	level := slog.LevelInfo
	attrs := []any{}
	for _, k := range refusalKinds {
		if n := counts[k]; n > 0 {
			total += n
			attrs = append(attrs, string(k), n)
			if k != refusedHandshake {
				level = slog.LevelWarn
			}
		}
	}
	if total == 0 {
		return
	}
	attrs = append([]any{"refused", total, "interval", r.interval.String()}, attrs...)
	r.log.Log(context.Background(), level, "connections refused, not logged singly", attrs...)
}
