package gateway

import (
	"context"
	"crypto/tls"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// logRecorder is a slog.Handler that keeps every record, for tests that
// count or wait for log lines.
type logRecorder struct {
	mu      sync.Mutex // guards records and changed
	records []loggedRecord
	changed chan struct{} // closed and replaced on every record
}

type loggedRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func newLogRecorder() *logRecorder { return &logRecorder{changed: make(chan struct{})} }

func (r *logRecorder) logger() *slog.Logger { return slog.New(r) }

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &boundRecorder{r: r, attrs: attrs}
}

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	return r.add(rec, nil)
}

func (r *logRecorder) add(rec slog.Record, bound []slog.Attr) error {
	lr := loggedRecord{Level: rec.Level, Msg: rec.Message, Attrs: map[string]string{}}
	for _, a := range bound {
		lr.Attrs[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		lr.Attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, lr)
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// boundRecorder is a logRecorder with attributes from Logger.With.
type boundRecorder struct {
	r     *logRecorder
	attrs []slog.Attr
}

func (b *boundRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (b *boundRecorder) WithGroup(string) slog.Handler            { return b }
func (b *boundRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &boundRecorder{r: b.r, attrs: append(append([]slog.Attr(nil), b.attrs...), attrs...)}
}
func (b *boundRecorder) Handle(_ context.Context, rec slog.Record) error {
	return b.r.add(rec, b.attrs)
}

// matching returns the records whose message contains msg.
func (r *logRecorder) matching(msg string) []loggedRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []loggedRecord
	for _, rec := range r.records {
		if strings.Contains(rec.Msg, msg) {
			out = append(out, rec)
		}
	}
	return out
}

func (r *logRecorder) all() []loggedRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]loggedRecord(nil), r.records...)
}

// waitFor waits until n records contain msg.
func (r *logRecorder) waitFor(t *testing.T, msg string, n int) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		if len(r.matching(msg)) >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no %d log lines %q within 5s; got %d", n, msg, len(r.matching(msg)))
		}
	}
}

// manualClock is RealClock whose AfterFunc timers fire only when the test
// says so.
type manualClock struct {
	RealClock
	mu     sync.Mutex // guards timers
	timers []*manualTimer
}

type manualTimer struct {
	c       *manualClock
	f       func()
	pending bool // guarded by c.mu
}

func (c *manualClock) AfterFunc(_ time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, f: f, pending: true}
	c.timers = append(c.timers, t)
	return t
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.pending
	t.pending = false
	return was
}

// fire runs every pending timer, in this goroutine, and says how many.
func (c *manualClock) fire() int {
	c.mu.Lock()
	var due []*manualTimer
	for _, t := range c.timers {
		if t.pending {
			t.pending = false
			due = append(due, t)
		}
	}
	c.timers = nil
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
	return len(due)
}

// eventually polls cond until it holds or 15 s pass (a bound for loaded CI machines, not a wait).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15s: %s", what)
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

// openConns counts the gateway's authenticated connections not yet
// released: their handler runs, or their stream does.
func (s *Server) openConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// connsOf counts identity's connections at the gateway.
func (s *Server) connsOf(identity string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.identities[identity]
}

// issue makes a client certificate for name from the gateway's CA.
func (g *testGateway) issue(t *testing.T, name string) *tls.Certificate {
	t.Helper()
	leaf, err := g.ca.Issue(certs.Client, name, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return leaf.TLSCertificate()
}

// noLeaks runs f, then checks that the goroutines it started have ended.
func noLeaks(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	baseline := runtime.NumGoroutine()
	t.Run("run", f)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after shutdown, baseline %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

// noted counts the refusals of the open interval, logged or not.
func (r *refusalLog) noted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.counts {
		n += c
	}
	return n + len(r.logged)
}

// leafPair issues, from ca, an hour's server certificate named server for
// 127.0.0.1 and a client certificate named client.
func leafPair(tb testing.TB, ca *certs.CA, server, client string) (srv, cli *tls.Certificate) {
	tb.Helper()
	srvLeaf, err := ca.Issue(certs.Server, server, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	cliLeaf, err := ca.Issue(certs.Client, client, nil, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return srvLeaf.TLSCertificate(), cliLeaf.TLSCertificate()
}
