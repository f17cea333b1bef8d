package engine

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"
)

// Status is what an engine reports about itself, as JSON, to the gateway.
type Status struct {
	// Engine is the kind of engine: buildkit or dagger.
	Engine      string `json:"engine,omitempty"`
	Ready       bool   `json:"ready"`
	Connections int64  `json:"connections"`
	// Builds is the work in progress: BuildKit's active builds, or Dagger's
	// client sessions.
	Builds int `json:"builds"`
	// CacheBytes is the cache's size as the engine reports it (Dagger's
	// lags by up to a minute); 0 if it cannot tell.
	CacheBytes  int64  `json:"cache_bytes"`
	IdleSeconds int64  `json:"idle_seconds"`
	Error       string `json:"error,omitempty"`
	// CPUs is what the engine may run on: GOMAXPROCS, which Go caps at the
	// machine's CPUs and at a container's CPU limit. The gateway sizes the
	// engine's soft limit by it (--soft-limit auto).
	CPUs int `json:"cpus,omitempty"`
}

// Status asks the engine, in the way its kind answers, for work in
// progress and cache usage.
func (e *Engine) Status(ctx context.Context) Status {
	s := Status{Engine: string(e.cfg.Backend.Kind), Ready: e.ready.Load(), Connections: e.conns.Load(), CPUs: runtime.GOMAXPROCS(0)}
	if e.conns.Load() == 0 {
		s.IdleSeconds = int64(time.Since(time.Unix(0, e.lastBusy.Load())).Seconds())
	}
	if !s.Ready {
		return s
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var err error
	if s.Builds, err = e.act.Builds(qctx); err == nil {
		s.CacheBytes, err = e.act.CacheBytes(qctx)
	}
	if err != nil {
		// Unknown is not idle: a gateway must not stop this engine.
		s.Ready, s.Error = false, err.Error()
	}
	return s
}

// Headers of /ready and /status naming the engine's current certificate:
// a gateway on the unix front sees no certificate, and reports engines'
// certificate expiries from these instead (Client.EngineCerts).
const (
	headerCertName     = "Wakegate-Engine-Name"
	headerCertNotAfter = "Wakegate-Engine-Not-After"
)

// certHeaders sets the headers of the certificate the engine serves now,
// if it has one.
func (e *Engine) certHeaders(h http.Header) {
	if e.tls == nil || e.tls.GetCertificate == nil {
		return
	}
	c, err := e.tls.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || c == nil || c.Leaf == nil {
		return
	}
	h.Set(headerCertName, c.Leaf.Subject.CommonName)
	h.Set(headerCertNotAfter, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
}

// GET /ready waits, while the engine starts, until it is ready — then
// answers at once, which spares the gateway a polling interval — or until
// ?wait= (a Go duration; 0 answers at once) passes, at most maxReadyWait.
// Without ?wait= it waits defaultReadyWait: what a gateway that does not
// ask got before the engine served early, when its probe's dial waited in
// the backlog under a 10 s timeout.
const (
	defaultReadyWait = 10 * time.Second
	maxReadyWait     = 30 * time.Second
)

// readyWait is the wait a GET /ready asks for: ?wait=, bounded.
func readyWait(q string) time.Duration {
	if q == "" {
		return defaultReadyWait
	}
	d, err := time.ParseDuration(q)
	if err != nil || d < 0 {
		return 0
	}
	return min(d, maxReadyWait)
}

// statusServer answers GET /ready and GET /status on connections that
// asked for HTTP/1.1, on either front.
type statusServer struct {
	srv   *http.Server
	conns chan net.Conn
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

func newStatusServer(e *Engine) *statusServer {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		e.certHeaders(w.Header())
		if err := e.awaitReady(r.Context(), readyWait(r.URL.Query().Get("wait"))); err != nil {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		e.certHeaders(w.Header())
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(e.Status(r.Context()))
	})
	s := &statusServer{
		srv:   &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute},
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.srv.Serve(chanListener{s})
	}()
	return s
}

// serve hands an established connection to the HTTP server.
func (s *statusServer) serve(c net.Conn) {
	select {
	case s.conns <- c:
	case <-s.done:
		c.Close()
	}
}

func (s *statusServer) close() {
	s.once.Do(func() {
		close(s.done)
		s.srv.Close()
	})
	s.wg.Wait()
}

// chanListener is a net.Listener fed by statusServer.serve.
type chanListener struct{ s *statusServer }

func (l chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.s.conns:
		return c, nil
	case <-l.s.done:
		return nil, net.ErrClosed
	}
}

func (l chanListener) Close() error { return nil }

func (l chanListener) Addr() net.Addr { return &net.UnixAddr{Name: "status", Net: "unix"} }
