package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	controlapi "github.com/moby/buildkit/api/services/control"
	"github.com/moby/buildkit/client"
	"google.golang.org/grpc"
)

// partialBuildKit is an engine's control API that implements only what
// Dagger's does: Info and ListWorkers; everything else answers Unimplemented.
type partialBuildKit struct {
	controlapi.UnimplementedControlServer
}

// servePartialBuildKit serves it on a unix socket until the test ends.
func servePartialBuildKit(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(shortDir(t), "bk.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	controlapi.RegisterControlServer(srv, partialBuildKit{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Serve(ln)
	}()
	t.Cleanup(func() { srv.Stop(); wg.Wait() })
	return "unix://" + sock
}

// readyEngine is an Engine past its start, asking act about its work.
func readyEngine(t *testing.T, kind Kind, act activity, drain time.Duration) *Engine {
	t.Helper()
	e, err := New(Config{Backend: Buildkitd{Kind: kind, Dir: t.TempDir(), EngineBin: fakeDaggerBin(t)},
		TLS: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}, Allow: []string{"wakegate-gateway"},
		DrainTimeout: drain, StopTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	e.act = act
	e.ready.Store(true)
	e.markBusy()
	return e
}

func TestUnimplementedBuildHistoryIsNeitherBusyNorNotReady(t *testing.T) {
	addr := servePartialBuildKit(t)
	c, err := client.New(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := readyEngine(t, KindBuildkit, nil, time.Minute)
	e.act = &buildkitActivity{c: c, conns: e.conns.Load, log: e.cfg.Log}

	s := e.Status(t.Context())
	if !s.Ready || s.Builds != 0 || s.Error != "" {
		t.Fatalf("status of an idle engine without build history = %+v, want ready and idle", s)
	}
	if e.busy(t.Context()) {
		t.Fatal("an idle engine without build history reads as busy")
	}
	began := time.Now()
	e.drain()
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("the drain of an idle engine without build history took %s", took)
	}

	// Its connections are its work.
	e.conns.Add(1)
	if s := e.Status(t.Context()); !s.Ready || s.Builds != 1 {
		t.Fatalf("status with a connection open = %+v, want ready with 1 in progress", s)
	}
	if !e.busy(t.Context()) {
		t.Fatal("an engine with a connection open reads as idle")
	}
}

// failingActivity cannot tell: each query blocks until its context ends.
type failingActivity struct{}

func (failingActivity) Builds(ctx context.Context) (int, error) {
	<-ctx.Done()
	return 0, errors.New("engine does not answer")
}

func (failingActivity) CacheBytes(ctx context.Context) (int64, error) {
	<-ctx.Done()
	return 0, errors.New("engine does not answer")
}

func TestBuildkitEngineThatCannotBeAskedIsBusyButItsDrainIsBounded(t *testing.T) {
	drain := 300 * time.Millisecond
	e := readyEngine(t, KindBuildkit, failingActivity{}, drain)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if !e.busy(ctx) {
		t.Fatal("an engine that cannot be asked reads as idle")
	}
	if s := e.Status(ctx); s.Ready || s.Error == "" {
		t.Fatalf("status of an engine that cannot be asked = %+v, want not ready, with the error", s)
	}
	began := time.Now()
	e.drain()
	if took := time.Since(began); took > drain+time.Second {
		t.Fatalf("drain took %s, past its %s bound", took, drain)
	}
}

// serveMetricsText serves body as Dagger's metrics on a unix socket; stop
// ends it.
func serveMetricsText(t *testing.T, sock string, body *string, mu *sync.Mutex) (stop func()) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		w.Write([]byte(*body))
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { srv.Close(); <-done }) }
	t.Cleanup(stop)
	return stop
}

const daggerMetricsSample = `# HELP dagger_connected_clients Number of currently connected clients
# TYPE dagger_connected_clients gauge
dagger_connected_clients 2
# HELP dagger_dagql_cache_entries Number of entries in the dagql cache
dagger_dagql_cache_entries 3793
dagger_dagql_cache_metadata_estimated_bytes 1.6619264e+07
dagger_local_cache_corrupt_db_reset 0
dagger_local_cache_entries 3793
dagger_local_cache_total_disk_size_bytes 1.2288e+04
go_goroutines 120
`

func TestDaggerActivityReadsItsMetricsAndFallsBackToTheFrontsConnections(t *testing.T) {
	sock := filepath.Join(shortDir(t), "metrics.sock")
	var mu sync.Mutex
	body := daggerMetricsSample
	stop := serveMetricsText(t, sock, &body, &mu)
	var conns int64
	act := newDaggerActivity(sock, func() int64 { return conns }, slog.New(slog.DiscardHandler))
	e := readyEngine(t, KindDagger, act, time.Minute)

	s := e.Status(t.Context())
	if !s.Ready || s.Engine != "dagger" || s.Builds != 2 || s.CacheBytes != 12288 {
		t.Fatalf("status from Dagger's metrics = %+v, want ready, 2 sessions, 12288 cache bytes", s)
	}
	if !e.busy(t.Context()) {
		t.Fatal("two Dagger sessions read as idle")
	}
	mu.Lock()
	body = strings.Replace(daggerMetricsSample, "dagger_connected_clients 2", "dagger_connected_clients 0", 1)
	mu.Unlock()
	if e.busy(t.Context()) {
		t.Fatal("no Dagger session and no connection read as busy")
	}

	// Metrics gone (an engine that dropped the experimental endpoint):
	// never "not ready", never busy by guess; the front's connections count.
	stop()
	if s := e.Status(t.Context()); !s.Ready || s.Builds != 0 || s.Error != "" {
		t.Fatalf("status without metrics, no connection = %+v, want ready and idle", s)
	}
	conns = 1
	if s := e.Status(t.Context()); !s.Ready || s.Builds != 1 {
		t.Fatalf("status without metrics, one connection = %+v, want ready with 1 in progress", s)
	}
}

func TestParseDaggerMetrics(t *testing.T) {
	for _, tc := range []struct {
		name    string
		text    string
		clients int
		cache   int64
		err     bool
	}{
		{name: "sample", text: daggerMetricsSample, clients: 2, cache: 12288},
		{name: "failed cache count is 0", text: "dagger_connected_clients 1\ndagger_local_cache_total_disk_size_bytes -1\n", clients: 1},
		{name: "labels and a timestamp", text: "dagger_connected_clients{engine=\"x\"} 3 1700000000\n", clients: 3},
		{name: "no clients gauge", text: "go_goroutines 12\n", err: true},
		{name: "garbage", text: "dagger_connected_clients lots\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseDaggerMetrics(strings.NewReader(tc.text))
			if tc.err {
				if err == nil {
					t.Fatalf("parse = %+v, want an error", m)
				}
				return
			}
			if err != nil || m.clients != tc.clients || m.cacheBytes != tc.cache {
				t.Fatalf("parse = %+v, %v; want %d clients, %d bytes", m, err, tc.clients, tc.cache)
			}
		})
	}
}

// TestTheDrainWaitsForAStreamThatHasJustBegun: a stream that came as the
// engine began to stop (its build not registered yet: BuildKit counts it
// from its Solve) is not cut by the stop; one that has been open longer
// with no build does not hold the drain.
func TestTheDrainWaitsForAStreamThatHasJustBegun(t *testing.T) {
	e := readyEngine(t, KindBuildkit, idleActivity{}, time.Minute)
	end := e.counted() // a stream, just begun
	drained := make(chan struct{})
	go func() { e.drain(); close(drained) }()
	select {
	case <-drained:
		t.Fatal("the drain ended with a stream open that had just begun")
	case <-time.After(300 * time.Millisecond): // a bound on a non-event, not synchronisation
	}
	end()
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the drain did not end once the stream had")
	}

	// A stream open for longer than the grace, with no build, is an idle
	// client's: the drain does not wait for it.
	defer e.counted()()
	e.lastStream.Store(time.Now().Add(-time.Hour).UnixNano())
	drained = make(chan struct{})
	go func() { e.drain(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the drain waited for a stream open for an hour with no build")
	}
}
