package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// writeMetrics writes the pool's per-engine metrics in Prometheus' text
// format: sessions, connections, state, wakes with a latency histogram,
// and machine-seconds billed.
func writeMetrics(w io.Writer, engines []EngineStatus) {
	for _, g := range []struct {
		name, help, kind string
		value            func(EngineStatus) float64
	}{
		{"wakegate_engine_sessions", "Client sessions (affinity keys) on the engine.", "gauge", func(e EngineStatus) float64 { return float64(e.Sessions) }},
		{"wakegate_engine_connections", "Open client connections to the engine.", "gauge", func(e EngineStatus) float64 { return float64(e.Conns) }},
		{"wakegate_engine_machine_seconds_total", "Seconds the engine's machine was not stopped (billed).", "counter", func(e EngineStatus) float64 { return e.MachineSeconds }},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", g.name, g.help, g.name, g.kind)
		for _, e := range engines {
			fmt.Fprintf(w, "%s{engine=%q} %g\n", g.name, e.ID, g.value(e))
		}
	}
	fmt.Fprintln(w, "# HELP wakegate_engine_state The engine's state (1 for the current one).")
	fmt.Fprintln(w, "# TYPE wakegate_engine_state gauge")
	for _, e := range engines {
		for _, s := range []State{Stopped, Starting, Running, Stopping} {
			v := 0
			if e.State == s {
				v = 1
			}
			fmt.Fprintf(w, "wakegate_engine_state{engine=%q,state=%q} %d\n", e.ID, s, v)
		}
	}
	fmt.Fprintln(w, "# HELP wakegate_engine_wake_seconds Time from a wake's start to BuildKit answering.")
	fmt.Fprintln(w, "# TYPE wakegate_engine_wake_seconds histogram")
	for _, e := range engines {
		cum := 0
		for i, b := range WakeBuckets {
			if i < len(e.WakeHistogram) {
				cum += e.WakeHistogram[i]
			}
			fmt.Fprintf(w, "wakegate_engine_wake_seconds_bucket{engine=%q,le=%q} %d\n", e.ID, strconv.FormatFloat(b.Seconds(), 'g', -1, 64), cum)
		}
		if n := len(e.WakeHistogram); n > 0 {
			cum += e.WakeHistogram[n-1]
		}
		fmt.Fprintf(w, "wakegate_engine_wake_seconds_bucket{engine=%q,le=\"+Inf\"} %d\n", e.ID, cum)
		fmt.Fprintf(w, "wakegate_engine_wake_seconds_count{engine=%q} %d\n", e.ID, cum)
	}
}

func metricsHandler(p *Pool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		writeMetrics(w, p.Status())
	}
}
