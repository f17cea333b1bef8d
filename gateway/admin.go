package gateway

import (
	"encoding/json"
	"net/http"
	"time"
)

// AdminPaths are what the admin endpoint serves, each to GET; the
// gateway's help lists them.
var AdminPaths = []string{"/healthz", "/readyz", "/engines", "/status", "/metrics"}

// AdminOptions are what the admin endpoint learns from the gateway's
// wiring rather than from the pool.
type AdminOptions struct {
	// Ready is nil when the gateway can serve clients (its CA loaded, its
	// listener up, its provider answering), else why not; nil Ready means
	// ready.
	Ready func() error
	// Identities is the connections open per identity (Server.Identities);
	// nil leaves them out of /status.
	Identities func() map[string]int
	// Certs are the certificates the gateway holds and their expiry;
	// nil leaves them out of /status.
	Certs func() []CertExpiry
	// Cache, if set, is asked for each running engine's cache usage at
	// every /status (not /engines, which monitors poll).
	Cache CacheUsage
}

// CertExpiry names a certificate the gateway holds and when it expires.
type CertExpiry struct {
	Name     string    `json:"name"` // "gateway", "ca_root", "ca_intermediate", "engine:ID"
	NotAfter time.Time `json:"not_after"`
}

// Status is the admin /status answer, what 'wakegate status' prints.
type Status struct {
	Engines    []EngineStatus `json:"engines"`
	Identities map[string]int `json:"connections_by_identity"`
	Certs      []CertExpiry   `json:"certificates,omitempty"`
	Ready      bool           `json:"ready"`
	NotReady   string         `json:"not_ready,omitempty"`
}

// AdminHandler serves the operator's read-only view of the pool with no
// wiring's options: see NewAdminHandler.
func AdminHandler(p *Pool) http.Handler { return NewAdminHandler(p, AdminOptions{}) }

// NewAdminHandler serves the operator's read-only view of the pool:
// GET /healthz answers "ok" while the process is up; GET /readyz 200 when
// opts.Ready says so, else 503 and the reason; GET /engines lists engine
// states as JSON; GET /status adds connections by identity, certificate
// expiries and running engines' cache usage; GET /metrics serves Prometheus' exposition.
func NewAdminHandler(p *Pool, opts AdminOptions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if opts.Ready != nil {
			if err := opts.Ready(); err != nil {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte("not ready: " + err.Error() + "\n"))
				return
			}
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /engines", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p.Status())
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st := Status{Engines: p.Status(), Identities: map[string]int{}, Ready: true}
		if opts.Cache != nil {
			p.addCacheUsage(r.Context(), st.Engines, opts.Cache)
		}
		if opts.Identities != nil {
			st.Identities = opts.Identities()
		}
		if opts.Certs != nil {
			st.Certs = opts.Certs()
		}
		if opts.Ready != nil {
			if err := opts.Ready(); err != nil {
				st.Ready, st.NotReady = false, err.Error()
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	mux.Handle("GET /metrics", metricsHandler(p))
	return mux
}
