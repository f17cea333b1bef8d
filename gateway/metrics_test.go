package gateway

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/identity"
)

// scrape serves the pool's /metrics and parses it as Prometheus does.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sample is the metric of family name whose labels include want; nil when
// there is none.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is the sample of family name whose labels include want (counter,
// gauge or a histogram's count); -1 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	m := sample(fams, name, want)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

// TestMetricsCountConnectionsRefusalsBytesAndWakes drives a real gateway
// through a held connection, a wake, a proxied echo and refusals of each
// kind the test can provoke, then scrapes /metrics: each event is counted
// under its label, and the exposition passes promtool's lint.
func TestMetricsCountConnectionsRefusalsBytesAndWakes(t *testing.T) {
	h := &fakeHost{startGate: make(chan struct{}), addr: echoEngine(t)}
	g := startGatewayWith(t, h, func(p identity.Peer) error {
		if p.Name == "intruder" {
			return errors.New("not in the policy")
		}
		return nil
	})
	admin := AdminHandler(g.pool)

	c := g.dial(t, g.client, g.ca, "")
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	waitState(t, g.pool.Engines()[0], Starting)
	eventually(t, "the connection held", func() bool {
		return value(scrape(t, admin), "wakegate_connections_held", nil) == 1
	})
	if got := value(scrape(t, admin), "wakegate_connections_active", nil); got != 1 {
		t.Errorf("wakegate_connections_active while held = %v, want 1", got)
	}
	close(h.startGate)
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("read after CloseWrite = %v, want EOF", err)
	}
	c.Close()

	// Refusals: a certificate of another CA, and an identity the policy refuses.
	other, err := certs.Init(t.TempDir(), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(certs.Client, "ci", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, cert := range []*certs.Leaf{foreign} {
		fc := g.dial(t, cert.TLSCertificate(), g.ca, "")
		fc.SetDeadline(time.Now().Add(5 * time.Second))
		fc.Read(make([]byte, 1))
	}
	ic := g.dial(t, g.issue(t, "intruder"), g.ca, "")
	ic.SetDeadline(time.Now().Add(5 * time.Second))
	ic.Read(make([]byte, 1))

	eventually(t, "the echo counted as closed and both refusals counted", func() bool {
		f := scrape(t, admin)
		return value(f, "wakegate_connections_total", map[string]string{"result": "closed"}) == 1 &&
			value(f, "wakegate_connections_refused_total", map[string]string{"reason": "handshake_failed"}) == 1 &&
			value(f, "wakegate_connections_refused_total", map[string]string{"reason": "policy"}) == 1
	})
	f := scrape(t, admin)
	id := g.pool.Engines()[0].ID()
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"wakegate_connections_active", nil, 0},
		{"wakegate_connections_held", nil, 0},
		{"wakegate_connections_total", map[string]string{"result": "no_engine"}, 0},
		{"wakegate_connections_refused_total", map[string]string{"reason": "over_limit"}, 0},
		{"wakegate_connection_bytes_total", map[string]string{"direction": "to_engine"}, 4},
		{"wakegate_connection_bytes_total", map[string]string{"direction": "to_client"}, 4},
		{"wakegate_engine_wake_seconds", map[string]string{"engine": id}, 1},
		{"wakegate_engine_state", map[string]string{"engine": id, "state": "running"}, 1},
		{"wakegate_engine_sessions", map[string]string{"engine": id}, 0},
	} {
		if got := value(f, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if h := f["wakegate_engine_wake_seconds"].Metric[0].Histogram; h.GetSampleSum() <= 0 {
		t.Errorf("wake histogram sum = %v, want the wake's time", h.GetSampleSum())
	}
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if f[name] == nil {
			t.Errorf("runtime metric %s missing", name)
		}
	}
	// What 'promtool check metrics' runs.
	problems, err := testutil.GatherAndLint(g.pool.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestReadyzSaysWhyNotReady: /healthz answers while the process is up,
// /readyz only when the wiring says ready, with the reason otherwise.
func TestReadyzSaysWhyNotReady(t *testing.T) {
	p := newTestPool(t, 1, DefaultPolicy)
	var why error = errors.New("listener not up")
	h := NewAdminHandler(p, AdminOptions{Ready: func() error { return why }})
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "listener not up") {
		t.Errorf("/readyz not ready = %d %q, want 503 naming the reason", code, body)
	}
	why = nil
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz ready = %d %q, want 200 ready", code, body)
	}
}

// TestCertificateExpiryIsExported: the expiries the wiring reports are
// gauges of Unix seconds.
func TestCertificateExpiryIsExported(t *testing.T) {
	p := newTestPool(t, 1, DefaultPolicy)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := p.WatchCertificates(func() []CertExpiry { return []CertExpiry{{Name: "gateway", NotAfter: at}} }); err != nil {
		t.Fatal(err)
	}
	f := scrape(t, AdminHandler(p))
	if got := value(f, "wakegate_certificate_expiry_timestamp_seconds", map[string]string{"cert": "gateway"}); got != float64(at.Unix()) {
		t.Fatalf("gateway certificate expiry = %v, want %d", got, at.Unix())
	}
}

// histSum is the sum of the histogram of family name whose labels include
// want; -1 when there is none.
func histSum(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	if m := sample(fams, name, want); m != nil && m.Histogram != nil {
		return m.Histogram.GetSampleSum()
	}
	return -1
}
