package gateway

import (
	"encoding/json"
	"net/http"
)

// AdminHandler serves the operator's read-only view of the pool:
// GET /healthz answers "ok"; GET /engines lists engine states as JSON;
// GET /metrics serves them in Prometheus' text format.
func AdminHandler(p *Pool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /engines", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p.Status())
	})
	mux.HandleFunc("GET /metrics", metricsHandler(p))
	return mux
}
