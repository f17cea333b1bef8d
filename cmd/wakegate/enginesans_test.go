package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/fly/flytest"
	"github.com/wakegate/wakegate/gateway"
	"github.com/wakegate/wakegate/identity"
)

// providerHarness is a CA with its API served, and a provider built by the
// gateway's own newProvider on it.
type providerHarness struct {
	ca    *certs.CA
	caSvc *caService
	ec    *engine.Client
}

func newProviderHarness(t *testing.T) *providerHarness {
	t.Helper()
	ca, err := certs.Init(filepath.Join(t.TempDir(), "ca"), "sans", nil)
	if err != nil {
		t.Fatal(err)
	}
	caSvc, err := startCA(ca, "127.0.0.1:0", "", certs.AuthorityConfig{}, certs.DefaultAPILimits, time.Hour, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(caSvc.Close)
	ec := newEngineClient(func() *tls.Certificate { return nil }, ca, caSvc)
	if ec.IsRevoked == nil {
		t.Error("the gateway's engine client does not check engines' certificates against the CA's revocation records")
	}
	return &providerHarness{ca: ca, caSvc: caSvc, ec: ec}
}

func (h *providerHarness) provider(t *testing.T, f *gatewayFlags) gateway.Provider {
	t.Helper()
	p, err := f.newProvider(t.Context(), hostCA{ca: h.ca, svc: h.caSvc}, engineBins{}, h.ec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// enrol spends an engine's token as 'wakegate engine' does and returns the
// certificate the engine would hold.
func (h *providerHarness) enrol(t *testing.T, tok string) *x509.Certificate {
	t.Helper()
	enr, err := certs.Enroll(t.Context(), h.caSvc.url, h.ca.Fingerprint(), tok, 0)
	if err != nil {
		t.Fatal(err)
	}
	return enr.Cert.Leaf
}

// checkEngineCert fails unless cert is an engine's: named name, serving
// only, with exactly the DNS names dns and no IP address.
func checkEngineCert(t *testing.T, cert *x509.Certificate, name string, dns ...string) {
	t.Helper()
	if cert.Subject.CommonName != name {
		t.Errorf("engine certificate for %q, want %q", cert.Subject.CommonName, name)
	}
	if !slices.Equal(cert.DNSNames, dns) || len(cert.IPAddresses) != 0 || len(cert.URIs) != 0 {
		t.Errorf("engine certificate names %v %v %v, want only %v", cert.DNSNames, cert.IPAddresses, cert.URIs, dns)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("engine certificate has ext key usages %v, want server auth only", cert.ExtKeyUsage)
	}
}

func TestExecEngineCertificateNamesOnlyTheEngine(t *testing.T) {
	h := newProviderHarness(t)
	out := filepath.Join(t.TempDir(), "token")
	p := h.provider(t, &gatewayFlags{pool: poolFlags{engines: 1}, host: hostFlags{provider: "exec",
		exec: execHostFlags{start: `printf '%s' "$WAKEGATE_TOKEN" > '` + out + `'; echo 127.0.0.1:1`, stop: "true"}}})
	if _, err := p.Start(t.Context(), "engine-0"); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	checkEngineCert(t, h.enrol(t, string(tok)), "wakegate-engine-0", "wakegate-engine-0")
}

// Not parallel: it sets the process environment.
func TestFlyEngineCertificateNamesTheMachineNotLoopback(t *testing.T) {
	em := flytest.New(flytest.Options{Dir: t.TempDir(), StartDelay: 10 * time.Millisecond, StopDelay: 10 * time.Millisecond, FirstAddr: 150})
	api := httptest.NewServer(em)
	t.Cleanup(func() { api.Close(); em.Close() })
	t.Setenv("FLY_FLAPS_BASE_URL", api.URL)
	t.Setenv("FLY_API_TOKEN", "emulator-token")
	mustRun(t, "fly", "init", "--app", "ci-engines", "--region", "ams", "--engines", "1", "--volume-size", "1", "--image", "wakegate-engine", "--idle", "0")
	ms := em.Machines("ci-engines")
	if len(ms) != 1 {
		t.Fatalf("fly init made %d machines, want 1", len(ms))
	}
	id := ms[0].ID

	h := newProviderHarness(t)
	p := h.provider(t, &gatewayFlags{pool: poolFlags{wakeTimeout: 30 * time.Second},
		host: hostFlags{provider: "fly", fly: flyHostFlags{app: "ci-engines", pool: "engines"}}})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := p.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	env := em.Machines("ci-engines")[0].Config.Env
	tok := env["WAKEGATE_TOKEN"]
	if tok == "" {
		t.Fatalf("the machine got no token: %v", env)
	}
	name := identity.EngineName(id)
	if env["WAKEGATE_ENGINE_NAME"] != name {
		t.Errorf("WAKEGATE_ENGINE_NAME = %q, want %q", env["WAKEGATE_ENGINE_NAME"], name)
	}
	checkEngineCert(t, h.enrol(t, tok), name, name, id+".vm.ci-engines.internal")
}

func TestEngineSANsPerProvider(t *testing.T) {
	for _, tc := range []struct {
		provider string
		want     []string
	}{
		{"local", []string{"wakegate-engine-0", "127.0.0.1", "localhost"}},
		{"fly", []string{"wakegate-engine-0", "m1.vm.app.internal"}},
		{"exec", []string{"wakegate-engine-0"}},
	} {
		f := &gatewayFlags{host: hostFlags{provider: tc.provider, fly: flyHostFlags{app: "app"}}}
		if got := f.engineSANs("wakegate-engine-0", "m1"); !slices.Equal(got, tc.want) {
			t.Errorf("%s: engine SANs = %v, want %v", tc.provider, got, tc.want)
		}
	}
}
