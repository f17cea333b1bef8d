package gateway

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// StartReporter is an optional capability of a Provider that can say what
// state the engine's host found it in when asked to start it: a wake from
// a suspended machine is a resume, much faster than a cold start, and one
// from a machine still stopping first waits for that stop. Hosts that do
// not say are counted as "stopped" (the gateway's own view before a wake).
type StartReporter interface {
	// StartFrom is Provider.Start, also returning the state the host found
	// the engine in: one of WakeFroms.
	StartFrom(ctx context.Context, id string) (addr, from string, err error)
}

// WakeFroms are the previous states a wake is counted by
// (wakegate_wake_seconds' from label): stopped (or created, failed: a cold
// start), suspended (resumed as it was), stopping (waited out, then
// started cold), running (the host already ran it, as after a gateway
// restart).
var WakeFroms = []string{"stopped", "suspended", "stopping", "running"}

// The phases of a wake (wakegate_wake_phase_seconds' phase label): the host
// starting the machine until it reports it started, then the engine
// becoming ready (BuildKit answering).
const (
	phaseHostStart   = "host_start"
	phaseEngineReady = "engine_ready"
)

// startFrom asks p to start engine id and says what state it was in.
func startFrom(ctx context.Context, p Provider, id string) (addr, from string, err error) {
	if r, ok := p.(StartReporter); ok {
		return r.StartFrom(ctx, id)
	}
	addr, err = p.Start(ctx, id)
	return addr, "stopped", err
}

// wakeTiming is one wake's time, by phase, or the phase it failed in.
type wakeTiming struct {
	failedIn    string        // "" for a wake that succeeded; else phaseHostStart or phaseEngineReady
	from        string        // the host's state before it (WakeFroms)
	hostStart   time.Duration // asking the host to start it until it reported it started
	engineReady time.Duration // from then until the engine answered
}

// wakeMetrics are the wake histograms across the pool's engines, by
// previous state and by phase; the per-engine total is
// wakegate_engine_wake_seconds.
type wakeMetrics struct {
	total  *prometheus.HistogramVec // by from
	phase  *prometheus.HistogramVec // by phase and from
	failed *prometheus.CounterVec   // by phase
}

func newWakeMetrics(reg prometheus.Registerer) *wakeMetrics {
	buckets := make([]float64, len(WakeBuckets))
	for i, b := range WakeBuckets {
		buckets[i] = b.Seconds()
	}
	m := &wakeMetrics{
		total: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "wakegate_wake_seconds",
			Help:    "Time of successful wakes, asking the host to start an engine until it answers, by the state the host found it in.",
			Buckets: buckets}, []string{"from"}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "wakegate_wake_phase_seconds",
			Help:    "Time of each phase of successful wakes (host_start: until the host reports the machine started; engine_ready: then until the engine answers), by the state the host found it in.",
			Buckets: buckets}, []string{"phase", "from"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wakegate_wake_failures_total",
			Help: "Wakes that failed, by the phase they failed in (host_start: the host did not start the machine; engine_ready: the engine did not answer in time, or exited)."},
			[]string{"phase"}),
	}
	m.failed.WithLabelValues(phaseHostStart)
	m.failed.WithLabelValues(phaseEngineReady)
	for _, from := range WakeFroms {
		m.total.WithLabelValues(from)
		m.phase.WithLabelValues(phaseHostStart, from)
		m.phase.WithLabelValues(phaseEngineReady, from)
	}
	reg.MustRegister(m.total, m.phase, m.failed)
	return m
}

// observe records one wake.
func (m *wakeMetrics) observe(t wakeTiming) {
	if t.failedIn != "" {
		m.failed.WithLabelValues(t.failedIn).Inc()
		return
	}
	m.total.WithLabelValues(t.from).Observe((t.hostStart + t.engineReady).Seconds())
	m.phase.WithLabelValues(phaseHostStart, t.from).Observe(t.hostStart.Seconds())
	m.phase.WithLabelValues(phaseEngineReady, t.from).Observe(t.engineReady.Seconds())
}
