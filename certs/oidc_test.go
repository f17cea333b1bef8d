package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs/oidctest"
	"github.com/wakegate/wakegate/identity"
	"go.step.sm/crypto/jose"
)

// allowAcme is a policy that lets repository acme/app in, and nothing else.
func allowAcme(c identity.Claims) error {
	if c.Repository == "acme/app" {
		return nil
	}
	return fmt.Errorf("repository %s is not allowed by the gateway's policy", c.Repository)
}

// oidcAuthority serves a CA API with OIDC enrolment from iss enabled.
func oidcAuthority(t *testing.T, iss *oidctest.Issuer, cfg OIDCConfig) (*Authority, string) {
	t.Helper()
	a, url := servedAuthority(t, nil)
	cfg.Issuer = iss.URL
	if cfg.Audience == "" {
		cfg.Audience = DefaultOIDCAudience
	}
	if cfg.Allow == nil {
		cfg.Allow = allowAcme
	}
	if cfg.MinRefetch == 0 {
		cfg.MinRefetch = time.Nanosecond
	}
	if err := a.EnableOIDC(cfg); err != nil {
		t.Fatal(err)
	}
	return a, url
}

func recordCount(t *testing.T, a *Authority) int {
	t.Helper()
	recs, err := a.Records()
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

func TestJobEnrolsWithItsGitHubIDTokenAndTheCertificateCarriesItsClaims(t *testing.T) {
	iss := oidctest.NewIssuer(t)
	a, url := oidcAuthority(t, iss, OIDCConfig{})
	claims := oidctest.GitHubClaims("acme/app")
	claims.Environment = "prod"
	job := iss.JobEndpoint(t, claims)
	for _, kv := range job.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}

	tok, err := GitHubIDToken(t.Context(), DefaultOIDCAudience)
	if err != nil {
		t.Fatal(err)
	}
	e, err := EnrollOIDC(t.Context(), url, a.CA().Fingerprint(), tok, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	leaf := e.Cert.Leaf
	if leaf.Subject.CommonName != "github:acme/app" {
		t.Errorf("common name %q, want github:acme/app", leaf.Subject.CommonName)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got > 11*time.Minute {
		t.Errorf("certificate lives %s, asked for 10m", got)
	}
	p := identity.FromCert(leaf)
	want := identity.Claims{Issuer: iss.URL, Subject: "repo:acme/app:ref:refs/heads/main", Repository: "acme/app", Owner: "acme",
		Ref: "refs/heads/main", Workflow: "CI", Environment: "prod", EventName: "push"}
	if p.OIDC == nil || *p.OIDC != want {
		t.Errorf("claims in the certificate = %+v, want %+v", p.OIDC, want)
	}
	if p.AffinityKey() != "repo:acme/app" {
		t.Errorf("affinity key %q, want repo:acme/app", p.AffinityKey())
	}
	if n := recordCount(t, a); n != 2 { // the CA API's own certificate and the job's
		t.Errorf("%d certificates recorded, want 2", n)
	}

	// Renewal is a fresh enrolment with a fresh job token.
	renew := OIDCRenewer(url, a.CA().Fingerprint(), 0, func(ctx context.Context) (string, error) { return GitHubIDToken(ctx, DefaultOIDCAudience) })
	next, err := renew(t.Context(), e.Cert)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	if next.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 || next.Leaf.Subject.CommonName != "github:acme/app" {
		t.Errorf("renewal gave serial %s for %q", next.Leaf.SerialNumber, next.Leaf.Subject.CommonName)
	}
	if job.Requests() != 2 {
		t.Errorf("job token endpoint asked %d times, want 2 (one per enrolment)", job.Requests())
	}
}

func TestOIDCEnrolmentRefusalsSayWhyAndRecordNothing(t *testing.T) {
	iss := oidctest.NewIssuer(t)
	var off atomic.Bool
	a, url := oidcAuthority(t, iss, OIDCConfig{Enabled: func() error {
		if off.Load() {
			return fmt.Errorf("no policy: OIDC enrolment is off")
		}
		return nil
	}})
	before := recordCount(t, a)
	acme := oidctest.GitHubClaims("acme/app")
	expired := acme
	past := time.Now().Add(-time.Hour)
	expired.IssuedAt = jose.NewNumericDate(past)
	wrongAud := acme
	wrongAud.Audience = jose.Audience{"https://github.com/acme"}

	tests := []struct {
		name  string
		token func() string
		off   bool
		want  string
	}{
		{"disallowed repository", func() string { return iss.Token(oidctest.GitHubClaims("evil/app")) }, false,
			"repository evil/app is not allowed by the gateway's policy"},
		{"wrong audience", func() string { return iss.Token(wrongAud) }, false,
			`the OIDC token is for audience "https://github.com/acme"; this gateway accepts "wakegate"`},
		{"expired token", func() string { return iss.Token(expired) }, false, "the OIDC token expired at"},
		{"untrusted issuer", func() string { return iss.ForeignToken(acme) }, false,
			"this gateway trusts only " + iss.URL},
		{"unknown key id", func() string { return iss.UnpublishedToken(acme) }, false,
			"which the issuer " + iss.URL + " does not publish"},
		{"no policy", func() string { return iss.Token(acme) }, true, "no policy: OIDC enrolment is off"},
		{"not a JWT", func() string { return "https://evil" }, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off.Store(tt.off)
			defer off.Store(false)
			_, err := EnrollOIDC(t.Context(), url, a.CA().Fingerprint(), tt.token(), 0)
			if err == nil {
				t.Fatal("enrolment succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
			if n := recordCount(t, a); n != before {
				t.Fatalf("%d certificates recorded after a refusal, want %d", n, before)
			}
		})
	}
	if _, jwks := iss.Foreign().Fetches(); jwks != 0 {
		t.Errorf("the CA fetched an untrusted issuer's keys %d times", jwks)
	}
}

func TestOIDCTokenSignsOnce(t *testing.T) {
	iss := oidctest.NewIssuer(t)
	a, url := oidcAuthority(t, iss, OIDCConfig{})
	tok := iss.Token(oidctest.GitHubClaims("acme/app"))
	if _, err := EnrollOIDC(t.Context(), url, a.CA().Fingerprint(), tok, 0); err != nil {
		t.Fatal(err)
	}
	_, err := EnrollOIDC(t.Context(), url, a.CA().Fingerprint(), tok, 0)
	if err == nil || !strings.Contains(err.Error(), "already exchanged") {
		t.Fatalf("second exchange of one token = %v, want a refusal", err)
	}
}

func TestOIDCKeyRotationAtTheIssuerIsFollowed(t *testing.T) {
	iss := oidctest.NewIssuer(t)
	a, url := oidcAuthority(t, iss, OIDCConfig{})
	acme := oidctest.GitHubClaims("acme/app")
	if _, err := EnrollOIDC(t.Context(), url, a.CA().Fingerprint(), iss.Token(acme), 0); err != nil {
		t.Fatal(err)
	}
	_, jwksBefore := iss.Fetches()
	iss.Rotate() // the old key is gone from the set
	if _, err := EnrollOIDC(t.Context(), url, a.CA().Fingerprint(), iss.Token(acme), 0); err != nil {
		t.Fatalf("enrolment after a key rotation: %v", err)
	}
	if _, jwks := iss.Fetches(); jwks != jwksBefore+1 {
		t.Errorf("key set fetched %d times for the rotation, want once", jwks-jwksBefore)
	}
}

func TestGatewayStartsWhileTheIssuerIsDownAndEnrolsOnceItAnswers(t *testing.T) {
	iss := oidctest.NewIssuer(t)
	iss.SetDown(true)
	a, url := oidcAuthority(t, iss, OIDCConfig{})
	tok := func() string { return iss.Token(oidctest.GitHubClaims("acme/app")) }
	_, err := EnrollOIDC(t.Context(), url, a.CA().Fingerprint(), tok(), 0)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the OIDC issuer "+iss.URL) {
		t.Fatalf("enrolment while the issuer is down = %v, want a clear retryable refusal", err)
	}
	iss.SetDown(false)
	if _, err := EnrollOIDC(t.Context(), url, a.CA().Fingerprint(), tok(), 0); err != nil {
		t.Fatalf("enrolment once the issuer answers: %v", err)
	}
}

func TestUnknownKeyIDsRefetchAtMostOncePerInterval(t *testing.T) {
	iss := oidctest.NewIssuer(t)
	k := newIssuerKeys(iss.URL, nil, 10*time.Second, slog.New(slog.DiscardHandler))
	now := time.Unix(1_000_000, 0)
	k.now = func() time.Time { return now }
	if _, err := k.key(t.Context(), iss.KeyID()); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := k.key(t.Context(), "forged"); !errors.Is(err, errKeyNotYet) {
			t.Fatalf("a forged key id within the interval = %v, want errKeyNotYet (retry)", err)
		}
	}
	if _, jwks := iss.Fetches(); jwks != 1 {
		t.Fatalf("%d key-set fetches for 5 forged key ids within the interval, want 1", jwks)
	}
	now = now.Add(10 * time.Second)
	if _, err := k.key(t.Context(), "forged"); err == nil || errors.Is(err, errKeyNotYet) || !strings.Contains(err.Error(), "does not publish") {
		t.Fatalf("a forged key id after a refetch = %v, want a final refusal", err)
	}
	if _, jwks := iss.Fetches(); jwks != 2 {
		t.Fatalf("%d key-set fetches after the interval, want 2", jwks)
	}
}

// TestAnUnreachableCAIsNotBlamedOnTheFingerprint: a CA API that cannot be
// reached says so and is retryable; a wrong fingerprint says that instead.
func TestAnUnreachableCAIsNotBlamedOnTheFingerprint(t *testing.T) {
	a, url := servedAuthority(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + ln.Addr().String()
	ln.Close()
	_, err = EnrollOIDC(t.Context(), closed, a.CA().Fingerprint(), "x", 0)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the CA API at "+closed) || strings.Contains(err.Error(), "fingerprint") || !Retryable(err) {
		t.Fatalf("enrol at a closed port = %v (retryable %v), want a retryable 'cannot reach'", err, Retryable(err))
	}
	other, err := Init(t.TempDir(), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = EnrollOIDC(t.Context(), url, other.Fingerprint(), "x", 0)
	if err == nil || !strings.Contains(err.Error(), "does not present a root with fingerprint") || Retryable(err) {
		t.Fatalf("enrol with another CA's fingerprint = %v, want a final fingerprint error", err)
	}
}
