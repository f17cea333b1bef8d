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
