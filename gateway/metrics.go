package gateway

import (
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DeliveryResults are what becomes of a GitHub webhook delivery, each
// reported (from 0) by wakegate_webhook_deliveries_total.
var DeliveryResults = []string{"woken", "coalesced", "replayed", "bad_signature", "not_allowed",
	"ignored_event", "ignored_action", "too_large", "bad_request", "stale", "failed"}

// ConnResults are what becomes of an authenticated client connection, each
// reported (from 0) by wakegate_connections_total.
var ConnResults = []string{"closed", "closed_with_error", "no_engine", "client_left", "engine_unreachable", "wake", "ahead_unused"}

// Byte directions of wakegate_connection_bytes_total: from clients to
// engines, and back.
const (
	dirToEngine = "to_engine"
	dirToClient = "to_client"
)

// serverMetrics are the counters the server adds to as connections come
// and go; the pool's state is read at scrape time (poolCollector), never
// counted twice.
type serverMetrics struct {
	active prometheus.Gauge
	held   prometheus.Gauge
	ahead  prometheus.Gauge
	// engineAhead is streams to engines made ahead of need, unused.
	engineAhead prometheus.Gauge
	conns       *prometheus.CounterVec // by result
	refused     *prometheus.CounterVec // by reason
	bytes       *prometheus.CounterVec // by direction
}

func newServerMetrics(reg prometheus.Registerer) *serverMetrics {
	m := &serverMetrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wakegate_connections_active",
			Help: "Authenticated client connections open at the gateway (held or proxied)."}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wakegate_connections_held",
			Help: "Client connections held while the gateway finds them an engine (a wake, a stop to wait out)."}),
		ahead: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wakegate_connections_ahead",
			Help: "Client connections made ahead of need (connect's spares) waiting for their first byte; no engine is theirs yet."}),
		engineAhead: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wakegate_engine_connections_ahead",
			Help: "Streams to running engines made ahead of need and not yet used; neither the gateway nor the engine counts them."}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wakegate_connections_total",
			Help: "Authenticated client connections closed, by what became of them."}, []string{"result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wakegate_connections_refused_total",
			Help: "Connections refused, by reason."}, []string{"reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wakegate_connection_bytes_total",
			Help: "Bytes proxied between clients and engines, by direction."}, []string{"direction"}),
	}
	// Every label from zero, so a rate() has a start.
	for _, r := range ConnResults {
		m.conns.WithLabelValues(r)
	}
	for _, r := range refusalKinds {
		m.refused.WithLabelValues(string(r))
	}
	m.bytes.WithLabelValues(dirToEngine)
	m.bytes.WithLabelValues(dirToClient)
	reg.MustRegister(m.active, m.held, m.ahead, m.engineAhead, m.conns, m.refused, m.bytes)
	return m
}

// newRegistry is a pool's own registry (no globals: two pools in one test
// process do not share counters): the Go runtime's and the process's
// collectors, the pool's state and the server's counters.
func newRegistry(p *Pool) (*prometheus.Registry, *serverMetrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		poolCollector{p})
	return reg, newServerMetrics(reg)
}

// Registry is the pool's metrics registry, served at the admin /metrics;
// the gateway's wiring adds its own (certificate expiry, provider calls).
func (p *Pool) Registry() *prometheus.Registry { return p.reg }

var (
	descSessions = prometheus.NewDesc("wakegate_engine_sessions", "Client sessions (affinity keys) on the engine.", []string{"engine"}, nil)
	descConns    = prometheus.NewDesc("wakegate_engine_connections", "Open client connections to the engine.", []string{"engine"}, nil)
	descMachine  = prometheus.NewDesc("wakegate_engine_machine_seconds_total", "Seconds the engine's machine was not stopped (billed).", []string{"engine"}, nil)
	descSoft     = prometheus.NewDesc("wakegate_engine_soft_limit", "Sessions the engine takes before clients go to another.", []string{"engine"}, nil)
	descCPUs     = prometheus.NewDesc("wakegate_engine_cpus", "The engine's CPUs as last reported (0: unknown).", []string{"engine"}, nil)
	descPrewakes = prometheus.NewDesc("wakegate_engine_prewakes_total", "Wakes that a pre-wake (a GitHub job queued) began.", []string{"engine"}, nil)
	descUnused   = prometheus.NewDesc("wakegate_engine_prewakes_unused_total", "Stops of an engine that pre-wakes had woken or kept, no connection having come within the grace.", []string{"engine"}, nil)
	descPreSecs  = prometheus.NewDesc("wakegate_engine_prewake_machine_seconds_total", "Machine seconds that pre-wakes added before a connection came or the engine stopped.", []string{"engine"}, nil)
	descState    = prometheus.NewDesc("wakegate_engine_state", "The engine's state (1 for the current one).", []string{"engine", "state"}, nil)
	descWake     = prometheus.NewDesc("wakegate_engine_wake_seconds", "Time from a wake's start to BuildKit answering.", []string{"engine"}, nil)
	descDeliv    = prometheus.NewDesc("wakegate_webhook_deliveries_total", "GitHub webhook deliveries at /github/webhook, by what became of them.", []string{"result"}, nil)
)

// poolCollector reads the pool's state at scrape time.
type poolCollector struct{ p *Pool }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descConns, descMachine, descSoft, descCPUs, descPrewakes,
		descUnused, descPreSecs, descState, descWake, descDeliv} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, e := range c.p.Status() {
		for _, g := range []struct {
			d    *prometheus.Desc
			kind prometheus.ValueType
			v    float64
		}{
			{descSessions, prometheus.GaugeValue, float64(e.Sessions)},
			{descConns, prometheus.GaugeValue, float64(e.Conns)},
			{descMachine, prometheus.CounterValue, e.MachineSeconds},
			{descSoft, prometheus.GaugeValue, float64(e.SoftLimit)},
			{descCPUs, prometheus.GaugeValue, float64(e.CPUs)},
			{descPrewakes, prometheus.CounterValue, float64(e.Prewakes)},
			{descUnused, prometheus.CounterValue, float64(e.PrewakesUnused)},
			{descPreSecs, prometheus.CounterValue, e.PrewakeSeconds},
		} {
			ch <- prometheus.MustNewConstMetric(g.d, g.kind, g.v, e.ID)
		}
		for _, s := range []State{Stopped, Starting, Running, Stopping} {
			v := 0.0
			if e.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, e.ID, string(s))
		}
		buckets := map[float64]uint64{}
		var cum uint64
		for i, b := range WakeBuckets {
			if i < len(e.WakeHistogram) {
				cum += uint64(e.WakeHistogram[i])
			}
			buckets[b.Seconds()] = cum
		}
		if n := len(e.WakeHistogram); n > len(WakeBuckets) {
			cum += uint64(e.WakeHistogram[n-1])
		}
		ch <- prometheus.MustNewConstHistogram(descWake, cum, e.WakeSeconds, buckets, e.ID)
	}
	labels, values := c.p.deliveries.snapshot(DeliveryResults)
	for i, l := range labels {
		ch <- prometheus.MustNewConstMetric(descDeliv, prometheus.CounterValue, float64(values[i]), l)
	}
}

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

func metricsHandler(p *Pool) http.Handler {
	return promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, Timeout: 10 * time.Second})
}

var descCertExpiry = prometheus.NewDesc("wakegate_certificate_expiry_timestamp_seconds",
	"When a certificate the gateway holds expires (Unix seconds), by name: gateway, ca_root, ca_intermediate, engine:ID.", []string{"cert"}, nil)

// certCollector reads the certificates' expiries at scrape time.
type certCollector func() []CertExpiry

func (c certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descCertExpiry }

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	for _, ce := range c() {
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(ce.NotAfter.Unix()), ce.Name)
	}
}

// WatchCertificates reports certs' expiries in the pool's metrics as
// wakegate_certificate_expiry_timestamp_seconds. Call it once.
func (p *Pool) WatchCertificates(certs func() []CertExpiry) error {
	return p.reg.Register(certCollector(certs))
}
