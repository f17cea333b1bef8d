package certs

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/smallstep/certificates/api"
	"github.com/wakegate/wakegate/identity"
)

// FuzzSignRequestRouting posts arbitrary bodies to /1.0/sign of an
// authority with OIDC enrolment on (its issuer in process, up or down).
// No body the fuzzer makes carries a token signed by one of the CA's keys
// or by the issuer's, so: the answer is never a success; it is a client
// error, or 503 only for an OIDC token while the issuer is down (smallstep
// answers 400 for what does not parse, 401 for what it does not authorize,
// 403 for what it will not sign; wakegate's OIDC route 400, 401 or 403); it
// is a JSON error with that status and words; and no certificate is
// recorded.
func FuzzSignRequestRouting(f *testing.F) {
	f.Add([]byte(`{"csr":"","ott":"x"}`), false)
	ca, err := Init(f.TempDir(), "fuzz", nil)
	if err != nil {
		f.Fatal(err)
	}
	a, err := ca.OpenAuthority(AuthorityConfig{Address: "127.0.0.1:0", DNSNames: []string{"127.0.0.1"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Close() })
	iss := fuzzIssuerOnce()
	if err := a.EnableOIDC(OIDCConfig{
		Issuer: fuzzIssuerURL, Audience: DefaultOIDCAudience,
		Allow:      func(identity.Claims) error { return nil }, // the signature, not the policy, must refuse
		HTTPClient: &http.Client{Transport: iss},
		MinRefetch: 1,
	}); err != nil {
		f.Fatal(err)
	}
	h := a.Handler()
	recs, err := a.Records()
	if err != nil {
		f.Fatal(err)
	}
	before := len(recs)

	f.Fuzz(func(t *testing.T, body []byte, down bool) {
		iss.down.Store(down)
		defer iss.down.Store(false)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/1.0/sign", bytes.NewReader(body)))
		status := rec.Code

		var req api.SignRequest
		oidc := json.Unmarshal(body, &req) == nil && looksLikeOIDC(unverifiedIssuer(req.OTT))
		switch {
		case status < 400:
			t.Fatalf("status %d for %q: %s", status, body, rec.Body)
		case status == http.StatusServiceUnavailable:
			if !down || !oidc {
				t.Fatalf("503 for %q with the issuer %s: %s", body, map[bool]string{true: "down", false: "up"}[down], rec.Body)
			}
		case status >= 500:
			t.Fatalf("status %d for %q: %s", status, body, rec.Body)
		}
		var e struct {
			Status  int    `json:"status"`
			Message string `json:"message"`
		}
		if !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") ||
			json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Status != status || e.Message == "" {
			t.Fatalf("status %d for %q answered %q (%s), want a JSON error", status, body, rec.Body, rec.Header().Get("Content-Type"))
		}
		if recs, err := a.Records(); err != nil || len(recs) != before {
			t.Fatalf("%d certificates recorded (%v) after %q", len(recs)-before, err, body)
		}
	})
}
