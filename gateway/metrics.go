package gateway

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
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
		{"wakegate_engine_soft_limit", "Sessions the engine takes before clients go to another.", "gauge", func(e EngineStatus) float64 { return float64(e.SoftLimit) }},
		{"wakegate_engine_cpus", "The engine's CPUs as last reported (0: unknown).", "gauge", func(e EngineStatus) float64 { return float64(e.CPUs) }},
		{"wakegate_engine_prewakes_total", "Wakes that a pre-wake (a GitHub job queued) began.", "counter", func(e EngineStatus) float64 { return float64(e.Prewakes) }},
		{"wakegate_engine_prewakes_unused_total", "Stops of an engine that pre-wakes had woken or kept, no connection having come within the grace.", "counter", func(e EngineStatus) float64 { return float64(e.PrewakesUnused) }},
		{"wakegate_engine_prewake_machine_seconds_total", "Machine seconds that pre-wakes added before a connection came or the engine stopped.", "counter", func(e EngineStatus) float64 { return e.PrewakeSeconds }},
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

// DeliveryResults are what becomes of a GitHub webhook delivery, each
// reported (from 0) by wakegate_webhook_deliveries_total.
var DeliveryResults = []string{"woken", "coalesced", "replayed", "bad_signature", "not_allowed",
	"ignored_event", "ignored_action", "too_large", "bad_request", "stale", "failed"}

// counters counts events by label value.
type counters struct {
	mu sync.Mutex // guards n
	n  map[string]uint64
}

func (c *counters) add(label string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]uint64{}
	}
	c.n[label]++
}

// snapshot is every label of known (0 if never counted) and every label
// counted, sorted.
func (c *counters) snapshot(known []string) (labels []string, values []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	labels = append(labels, known...)
	for l := range c.n {
		if !slices.Contains(labels, l) {
			labels = append(labels, l)
		}
	}
	slices.Sort(labels)
	for _, l := range labels {
		values = append(values, c.n[l])
	}
	return labels, values
}

// writeDeliveries writes the webhook's deliveries by result.
func writeDeliveries(w io.Writer, c *counters) {
	fmt.Fprintln(w, "# HELP wakegate_webhook_deliveries_total GitHub webhook deliveries at /github/webhook, by what became of them.")
	fmt.Fprintln(w, "# TYPE wakegate_webhook_deliveries_total counter")
	labels, values := c.snapshot(DeliveryResults)
	for i, l := range labels {
		fmt.Fprintf(w, "wakegate_webhook_deliveries_total{result=%q} %d\n", l, values[i])
	}
}

func metricsHandler(p *Pool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		writeMetrics(w, p.Status())
		writeDeliveries(w, &p.deliveries)
	}
}
