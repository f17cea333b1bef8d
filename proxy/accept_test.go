package proxy_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/wakegate/wakegate/proxy"
)

// scriptedListener returns the scripted results of Accept in order, then
// errExhausted.
type scriptedListener struct {
	mu     sync.Mutex
	script []acceptStep
	calls  int
}

type acceptStep struct {
	c   net.Conn
	err error
}

var errExhausted = errors.New("scripted listener exhausted")

func (l *scriptedListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if len(l.script) == 0 {
		return nil, errExhausted
	}
	s := l.script[0]
	l.script = l.script[1:]
	return s.c, s.err
}

func (l *scriptedListener) Close() error { return nil }
func (l *scriptedListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
}

func (l *scriptedListener) Calls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

// temporaryErr is an accept error that retrying can fix.
type temporaryErr struct{ timeout bool }

func (e temporaryErr) Error() string   { return "temporary accept failure" }
func (e temporaryErr) Temporary() bool { return true }
func (e temporaryErr) Timeout() bool   { return e.timeout }

// The error a listener really returns when the process runs out of file
// descriptors.
var emfile = &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}

// logRecorder is a slog handler that keeps every record and calls onRecord.
type logRecorder struct {
	mu       sync.Mutex
	records  []slog.Record
	onRecord func()
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	if h.onRecord != nil {
		h.onRecord()
	}
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

func (h *logRecorder) backoffs(t *testing.T) []string {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r.Level != slog.LevelWarn {
			t.Errorf("logged at %v, want Warn: %s", r.Level, r.Message)
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "backoff" {
				out = append(out, a.Value.String())
			}
			return true
		})
	}
	return out
}

func TestAcceptBacksOffAndRetriesTemporaryErrors(t *testing.T) {
	want, other := net.Pipe()
	defer want.Close()
	defer other.Close()
	ln := &scriptedListener{script: []acceptStep{
		{err: emfile},
		{err: temporaryErr{timeout: true}},
		{err: temporaryErr{}},
		{c: want},
	}}
	rec := &logRecorder{}
	c, err := proxy.Accept(ln, make(chan struct{}), slog.New(rec))
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if c != want {
		t.Fatalf("Accept returned %v, want the scripted conn", c)
	}
	if n := ln.Calls(); n != 4 {
		t.Errorf("listener Accept called %d times, want 4", n)
	}
	if got := rec.backoffs(t); !slices.Equal(got, []string{"5ms", "10ms", "20ms"}) {
		t.Errorf("logged backoffs %v, want 5ms, 10ms, 20ms (doubling)", got)
	}
}

func TestAcceptReturnsPermanentError(t *testing.T) {
	boom := errors.New("boom")
	ln := &scriptedListener{script: []acceptStep{{err: temporaryErr{}}, {err: boom}}}
	rec := &logRecorder{}
	c, err := proxy.Accept(ln, make(chan struct{}), slog.New(rec))
	if !errors.Is(err, boom) || c != nil {
		t.Fatalf("Accept = %v, %v; want nil, boom", c, err)
	}
	if n := ln.Calls(); n != 2 {
		t.Errorf("listener Accept called %d times, want 2", n)
	}
}

func TestAcceptReturnsErrClosedOnceDoneIsClosed(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"permanent error", errors.New("use of a closed listener, in some other words")},
		{"temporary error", temporaryErr{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan struct{})
			close(done)
			ln := &scriptedListener{script: []acceptStep{{err: tt.err}, {err: tt.err}}}
			c, err := proxy.Accept(ln, done, slog.New(&logRecorder{}))
			if err != net.ErrClosed || c != nil {
				t.Fatalf("Accept = %v, %v; want nil, net.ErrClosed", c, err)
			}
			if n := ln.Calls(); n != 1 {
				t.Errorf("listener Accept called %d times after done was closed, want 1", n)
			}
		})
	}
}

func TestAcceptStopsBackingOffWhenDoneIsClosed(t *testing.T) {
	done := make(chan struct{})
	warnings := 0
	// done closes while Accept backs off from its fifth failure (80 ms).
	rec := &logRecorder{onRecord: func() {
		if warnings++; warnings == 5 {
			close(done)
		}
	}}
	var script []acceptStep
	for range 7 {
		script = append(script, acceptStep{err: emfile})
	}
	ln := &scriptedListener{script: script}
	c, err := proxy.Accept(ln, done, slog.New(rec))
	if err != net.ErrClosed || c != nil {
		t.Fatalf("Accept = %v, %v; want nil, net.ErrClosed", c, err)
	}
	if n := ln.Calls(); n != 5 {
		t.Errorf("listener Accept called %d times, want 5: none after done closed during the backoff", n)
	}
}

func TestAcceptOnRealListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	log := slog.New(&logRecorder{})

	type result struct {
		c   net.Conn
		err error
	}
	results := make(chan result, 1)
	accept := func() {
		c, err := proxy.Accept(ln, done, log)
		results <- result{c, err}
	}

	go accept()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r := <-results
	if r.err != nil {
		t.Fatalf("Accept: %v", r.err)
	}
	if r.c.RemoteAddr().String() != d.LocalAddr().String() {
		t.Errorf("accepted %v, want the dialed conn from %v", r.c.RemoteAddr(), d.LocalAddr())
	}
	r.c.Close()

	// Shutdown: done closes and the listener closes under a blocked Accept.
	go accept()
	close(done)
	ln.Close()
	r = <-results
	if !errors.Is(r.err, net.ErrClosed) || r.c != nil {
		t.Fatalf("Accept after shutdown = %v, %v; want net.ErrClosed", r.c, r.err)
	}
}
