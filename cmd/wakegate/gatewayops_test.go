package main

import (
	"context"
	"crypto/tls"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/gateway"
	"github.com/wakegate/wakegate/identity"
)

// listingHost is a provider whose listing fails with err.
type listingHost struct{ err error }

func (h *listingHost) Engines(context.Context) ([]string, error) { return []string{"e0"}, h.err }
func (h *listingHost) Start(context.Context, string) (string, error) {
	return "", errors.New("not started in this test")
}
func (h *listingHost) Stop(context.Context, string) error { return nil }

// TestReadinessNamesWhatIsMissing: ready only with the CA and certificate
// loaded, the listener up and the provider answering; otherwise the
// reason names the missing part.
func TestReadinessNamesWhatIsMissing(t *testing.T) {
	ca, err := certs.Init(filepath.Join(t.TempDir(), "ca"), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certs.Server, "wakegate-gateway", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := leaf.TLSCertificate()
	for _, tc := range []struct {
		name      string
		cert      *tls.Certificate
		listening bool
		listErr   error
		want      string // "" for ready
	}{
		{"everything up", cert, true, nil, ""},
		{"no certificate", nil, true, nil, "no certificate"},
		{"listener down", cert, false, nil, "listener is not accepting"},
		{"provider failing", cert, true, errors.New("401 unauthorized"), "provider does not answer: 401 unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOpsView(ca, func() *tls.Certificate { return tc.cert })
			o.provider = &listingHost{err: tc.listErr}
			o.listening.Store(tc.listening)
			err := o.ready()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ready = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ready = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestCertificatesIncludeEachEngineSeen: the certificates the gateway
// reports (metrics, /status) are its own, the CA's and each pool engine's
// as its engine client last saw it, named engine:ID.
func TestCertificatesIncludeEachEngineSeen(t *testing.T) {
	ca, err := certs.Init(filepath.Join(t.TempDir(), "ca"), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certs.Server, "wakegate-gateway", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := gateway.NewPool(t.Context(), &listingHost{}, gateway.EngineConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	engineExpiry := time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
	o := newOpsView(ca, leaf.TLSCertificate)
	o.engineCerts = func() map[string]time.Time {
		return map[string]time.Time{identity.EngineName("e0"): engineExpiry, identity.EngineName("gone"): time.Now()}
	}
	if err := o.attach(pool, &listingHost{}); err != nil {
		t.Fatal(err)
	}
	got := map[string]time.Time{}
	for _, c := range o.certs() {
		got[c.Name] = c.NotAfter
	}
	want := map[string]time.Time{"gateway": leaf.TLSCertificate().Leaf.NotAfter, "ca_intermediate": ca.Intermediate.NotAfter,
		"ca_root": ca.Root.NotAfter, "engine:e0": engineExpiry}
	if len(got) != len(want) {
		t.Fatalf("certificates = %v, want %v (an engine not in the pool left out)", got, want)
	}
	for name, at := range want {
		if !got[name].Equal(at) {
			t.Errorf("%s expires %s, want %s", name, got[name], at)
		}
	}
}
