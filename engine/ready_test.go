package engine

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	controlapi "github.com/moby/buildkit/api/services/control"
	types "github.com/moby/buildkit/api/types"
	"google.golang.org/grpc"

	"github.com/wakegate/wakegate/wire"
)

func TestReadyPausesStartShortDoubleAndStayBounded(t *testing.T) {
	var got []time.Duration
	var p time.Duration
	for range 9 {
		p = nextReadyPause(p)
		got = append(got, p)
	}
	ms := time.Millisecond
	want := []time.Duration{2 * ms, 4 * ms, 8 * ms, 16 * ms, 32 * ms, 64 * ms, 100 * ms, 100 * ms, 100 * ms}
	if !slices.Equal(got, want) {
		t.Fatalf("pauses %v, want %v", got, want)
	}
}

func TestReadyWaitIsBounded(t *testing.T) {
	for _, tc := range []struct {
		q    string
		want time.Duration
	}{
		{"", defaultReadyWait},
		{"0", 0},
		{"250ms", 250 * time.Millisecond},
		{"1h", maxReadyWait},
		{"-1s", 0},
		{"soon", 0},
	} {
		if got := readyWait(tc.q); got != tc.want {
			t.Errorf("readyWait(%q) = %s, want %s", tc.q, got, tc.want)
		}
	}
}

// TestFrontServesWhileTheEngineStartsAndAnswersReadyTheMomentItIs: the
// gateway's probe completes its handshake while the engine process is
// still starting (before, it waited in the backlog and made its full
// handshake only once the engine was ready), /ready?wait=0 says not ready,
// a plain /ready is held and answered 200 once the engine process answers
// BuildKit's API, and a stream opened before that is proxied once ready.
func TestFrontServesWhileTheEngineStartsAndAnswersReadyTheMomentItIs(t *testing.T) {
	dir := shortDir(t)
	h := newHarness(t, filepath.Join(dir, "e"))
	// The engine process is a placeholder; the test plays its BuildKit
	// API on the engine's socket when it chooses to become ready.
	// The engine stops before its stand-in BuildKit, which its drain asks:
	// cleanups run last first.
	stopControl := func() {}
	t.Cleanup(func() { stopControl() })
	h.launch(Config{Backend: Buildkitd{Dir: h.dir, Cmd: []string{"sleep", "600"}},
		DrainTimeout: time.Minute, StopTimeout: 10 * time.Second, ReadyTimeout: time.Minute})
	e := h.engine

	dctx, dcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer dcancel()
	get := func(path string) (*http.Response, error) {
		c, err := h.dial(dctx, ProtoStatus, h.gwCert)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		req, _ := http.NewRequestWithContext(dctx, "GET", "http://engine"+path, nil)
		if err := req.Write(c); err != nil {
			return nil, err
		}
		return http.ReadResponse(bufio.NewReader(c), req)
	}
	resp, err := get("/ready?wait=0")
	if err != nil {
		t.Fatalf("probe while the engine starts: %v (the front must serve before ready)", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/ready?wait=0 while starting = %s, want 503", resp.Status)
	}
	if e.ready.Load() {
		t.Fatal("ready before its engine process answered")
	}

	// A held probe and a stream, both begun before the engine is ready.
	type answer struct {
		code int
		err  error
	}
	held := make(chan answer, 1)
	go func() {
		resp, err := get("/ready")
		if err != nil {
			held <- answer{err: err}
			return
		}
		held <- answer{code: resp.StatusCode}
	}()
	stream, err := h.dial(dctx, wire.ProtoProxy, h.gwCert)
	if err != nil {
		t.Fatalf("stream while the engine starts: %v", err)
	}
	defer stream.Close()
	if _, err := stream.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-held:
		t.Fatalf("/ready answered %d (%v) before the engine process did", a.code, a.err)
	default:
	}

	stopControl = serveControl(t, e.cfg.Backend.Socket())
	select {
	case a := <-held:
		if a.err != nil || a.code != http.StatusOK {
			t.Fatalf("held /ready = %d, %v; want 200 once ready", a.code, a.err)
		}
	case <-dctx.Done():
		t.Fatal("held /ready not answered once the engine was ready")
	}
	// The early stream reached the engine process: gRPC's server answers
	// the preface with its SETTINGS frame.
	stream.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := stream.Read(make([]byte, 9)); err != nil {
		t.Fatalf("stream opened before ready was not proxied once ready: %v", err)
	}
}

// oneWorker is a BuildKit control API that lists one worker (what the
// engine's readiness probe asks) and implements nothing else.
type oneWorker struct {
	controlapi.UnimplementedControlServer
}

func (oneWorker) ListWorkers(context.Context, *controlapi.ListWorkersRequest) (*controlapi.ListWorkersResponse, error) {
	return &controlapi.ListWorkersResponse{Record: []*types.WorkerRecord{{ID: "test"}}}, nil
}

// serveControl serves a BuildKit control API that lists one worker on sock
// until stop is called.
func serveControl(t *testing.T, sock string) (stop func()) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	controlapi.RegisterControlServer(srv, oneWorker{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Serve(ln)
	}()
	return func() { srv.Stop(); wg.Wait() }
}
