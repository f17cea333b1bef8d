package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"
)

// APILimits bound what unauthenticated callers of the CA API can take: the
// API faces the internet beside the mTLS port and shares the process's
// memory and file descriptors with it.
type APILimits struct {
	// MaxBody bounds every request body; larger ones are answered 413. A
	// CSR and a token are a few KiB.
	MaxBody int64
	// MaxConns caps concurrent connections; beyond it new ones wait in the
	// kernel's backlog instead of taking descriptors.
	MaxConns int
	// ReadTimeout bounds reading a whole request (TLS handshake, headers
	// and body), so slow bodies are cut; WriteTimeout bounds the rest of
	// the exchange; IdleTimeout closes idle keep-alive connections.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
}

// DefaultAPILimits suit a CA API that CI jobs enrol at.
var DefaultAPILimits = APILimits{
	MaxBody:      256 << 10,
	MaxConns:     256,
	ReadTimeout:  15 * time.Second,
	WriteTimeout: 30 * time.Second,
	// Enrolling clients make two or three requests: a short keep-alive
	// frees slots of the connection cap sooner.
	IdleTimeout: 10 * time.Second,
}

func (l *APILimits) setDefaults() {
	d := DefaultAPILimits
	if l.MaxBody <= 0 {
		l.MaxBody = d.MaxBody
	}
	if l.MaxConns <= 0 {
		l.MaxConns = d.MaxConns
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
}

// APIServer serves the authority's API within limits, and whatever else is
// mounted beside it (Mount).
type APIServer struct {
	srv    *http.Server
	limits APILimits
	mounts atomic.Pointer[mounts] // read per request; replaced whole by Mount
	mu     sync.Mutex             // serialises Mount
}

// mounts are the handlers served beside the CA's API, by path.
type mounts struct {
	mux   *http.ServeMux
	paths []string
	hs    []http.Handler
}

// NewAPIServer is the CA API's HTTPS server: the authority's handler behind
// a body limit, with read, write and idle timeouts; its certificate comes
// from cert on every handshake.
func (a *Authority) NewAPIServer(cert func() *tls.Certificate, limits APILimits, log *slog.Logger) *APIServer {
	limits.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &APIServer{limits: limits}
	api := limitBodies(a.Handler(), limits.MaxBody)
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if m := s.mounts.Load(); m != nil {
				if h, pattern := m.mux.Handler(r); pattern != "" {
					h.ServeHTTP(w, r)
					return
				}
			}
			api.ServeHTTP(w, r)
		}),
		TLSConfig:         a.ServerTLS(cert),
		ReadHeaderTimeout: min(10*time.Second, limits.ReadTimeout),
		ReadTimeout:       limits.ReadTimeout,
		WriteTimeout:      limits.WriteTimeout,
		IdleTimeout:       limits.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s
}

// Mount serves h at path (exactly; any method) on this server beside the
// CA's API, with the server's connection cap and timeouts but not its body
// limit: h must bound what it reads of a body itself. It may be called
// while the server serves. It refuses a path the CA's API serves under
// (the root, /1.0/, /admin/ and the step API's own paths).
func (s *APIServer) Mount(path string, h http.Handler) error {
	if !strings.HasPrefix(path, "/") || path == "/" || strings.HasSuffix(path, "/") || strings.ContainsAny(path, " {}") {
		return fmt.Errorf("CA API: mount %q: want an exact path such as /github/webhook", path)
	}
	if top, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/"); reservedAPIPaths[top] {
		return fmt.Errorf("CA API: mount %q: the CA's API serves under /%s", path, top)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.mounts.Load()
	m := &mounts{mux: http.NewServeMux()}
	if old != nil {
		m.paths, m.hs = append(m.paths, old.paths...), append(m.hs, old.hs...)
	}
	for _, p := range m.paths {
		if p == path {
			return fmt.Errorf("CA API: %s is mounted already", path)
		}
	}
	m.paths, m.hs = append(m.paths, path), append(m.hs, h)
	for i, p := range m.paths {
		m.mux.Handle(p, m.hs[i])
	}
	s.mounts.Store(m)
	return nil
}

// reservedAPIPaths are the first segments of the paths smallstep's API
// serves (api.Route), which a mount must not shadow.
var reservedAPIPaths = map[string]bool{
	"1.0": true, "version": true, "health": true, "root": true, "roots": true, "roots.pem": true,
	"sign": true, "renew": true, "rekey": true, "revoke": true, "crl": true, "provisioners": true,
	"intermediates": true, "intermediates.pem": true, "federation": true, "ssh": true, "re-sign": true,
	"sign-ssh": true, "admin": true, "acme": true, "scep": true,
	"wakegate": true, // wakegate's own operator requests (adminRoutes)
}

// Serve serves TLS on ln, at most MaxConns connections at a time, until
// Close.
func (s *APIServer) Serve(ln net.Listener) error {
	err := s.srv.ServeTLS(netutil.LimitListener(ln, s.limits.MaxConns), "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for requests in flight until ctx ends.
func (s *APIServer) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// limitBodies reads each request body up to max and answers 413 beyond it,
// before any handler sees it: smallstep's handlers would read without a
// bound.
func limitBodies(next http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := readBody(w, r, max); ok {
			next.ServeHTTP(w, r)
		}
	})
}

// readBody reads r's body up to max and puts it back for the next reader.
// Beyond max, or on a read error, it answers (413 or 400) and ok is false.
func readBody(w http.ResponseWriter, r *http.Request, max int64) (body []byte, ok bool) {
	if r.ContentLength > max {
		tooLarge(w, max)
		return nil, false
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return nil, false
	}
	if int64(len(body)) > max {
		tooLarge(w, max)
		return nil, false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, true
}

func tooLarge(w http.ResponseWriter, max int64) {
	// The rest of the body is not read: close rather than drain it.
	w.Header().Set("Connection", "close")
	writeAPIError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", max))
}
