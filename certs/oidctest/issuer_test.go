package oidctest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/jose"
)

// client trusts only the test root, as a verifier under test would.
func client(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	tr.TLSClientConfig = tlsConfig()
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// get fetches url and decodes a 200 answer into v; it returns the status.
func get(t *testing.T, c *http.Client, url string, v any) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	if resp.StatusCode == http.StatusOK && v != nil {
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("GET %s: Content-Type %q, want application/json", url, ct)
		}
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("decode %s: %v\n%s", url, err, body)
		}
	}
	return resp.StatusCode
}

func fetchJWKS(t *testing.T, iss *Issuer) jose.JSONWebKeySet {
	t.Helper()
	var set jose.JSONWebKeySet
	if code := get(t, client(t), iss.URL+"/.well-known/jwks", &set); code != http.StatusOK {
		t.Fatalf("JWKS: status %d", code)
	}
	return set
}

var errUnknownKid = errors.New("unknown kid")

// verify does what a verifier does: parse, pick the key by kid, check the
// signature, then iss, aud and the time claims.
func verify(tok string, set jose.JSONWebKeySet, issuer, audience string) (Claims, error) {
	var out Claims
	jwt, err := jose.ParseSigned(tok)
	if err != nil {
		return out, err
	}
	if len(jwt.Headers) != 1 || jwt.Headers[0].Algorithm != jose.RS256 {
		return out, fmt.Errorf("headers %+v, want one RS256", jwt.Headers)
	}
	keys := set.Key(jwt.Headers[0].KeyID)
	if len(keys) != 1 {
		return out, fmt.Errorf("%w %q", errUnknownKid, jwt.Headers[0].KeyID)
	}
	var std jose.Claims
	if err := jwt.Claims(keys[0].Key, &out, &std); err != nil {
		return out, err
	}
	return out, std.ValidateWithLeeway(jose.Expected{Issuer: issuer, Audience: jose.Audience{audience}, Time: time.Now()}, 0)
}

// payload is the token's claims as raw JSON values, unverified.
func payload(t *testing.T, tok string) map[string]json.RawMessage {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDiscoveryLikeGitHub(t *testing.T) {
	iss := NewIssuer(t)
	if !strings.HasPrefix(iss.URL, "https://127.0.0.1:") || strings.HasSuffix(iss.URL, "/") {
		t.Fatalf("URL %q, want https://127.0.0.1:PORT", iss.URL)
	}
	var d struct {
		Issuer        string   `json:"issuer"`
		JWKSURI       string   `json:"jwks_uri"`
		SubjectTypes  []string `json:"subject_types_supported"`
		ResponseTypes []string `json:"response_types_supported"`
		Claims        []string `json:"claims_supported"`
		Algs          []string `json:"id_token_signing_alg_values_supported"`
		Scopes        []string `json:"scopes_supported"`
	}
	if code := get(t, client(t), iss.URL+"/.well-known/openid-configuration", &d); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if d.Issuer != iss.URL || d.JWKSURI != iss.URL+"/.well-known/jwks" {
		t.Errorf("issuer %q jwks_uri %q, want %q and its /.well-known/jwks", d.Issuer, d.JWKSURI, iss.URL)
	}
	if !slices.Equal(d.Algs, []string{"RS256"}) || !slices.Equal(d.Scopes, []string{"openid"}) {
		t.Errorf("algs %v scopes %v", d.Algs, d.Scopes)
	}
	if !slices.Contains(d.ResponseTypes, "id_token") || !slices.Contains(d.SubjectTypes, "public") {
		t.Errorf("response types %v subject types %v", d.ResponseTypes, d.SubjectTypes)
	}
	for _, c := range []string{"sub", "aud", "iss", "exp", "jti", "repository", "job_workflow_ref", "environment"} {
		if !slices.Contains(d.Claims, c) {
			t.Errorf("claims_supported lacks %q", c)
		}
	}
	if disc, jwks := iss.Fetches(); disc != 1 || jwks != 0 {
		t.Errorf("Fetches = %d, %d; want 1, 0", disc, jwks)
	}
}

func TestJWKSPublishesPublicRSAKey(t *testing.T) {
	iss := NewIssuer(t)
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if code := get(t, client(t), iss.URL+"/.well-known/jwks", &raw); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if len(raw.Keys) != 1 {
		t.Fatalf("%d keys, want 1", len(raw.Keys))
	}
	k := raw.Keys[0]
	want := map[string]any{"kty": "RSA", "kid": iss.KeyID(), "alg": "RS256", "use": "sig", "e": "AQAB"}
	for f, v := range want {
		if k[f] != v {
			t.Errorf("key %s = %v, want %v", f, k[f], v)
		}
	}
	if n, _ := k["n"].(string); len(n) < 300 { // 2048 bits are 342 base64url digits
		t.Errorf("modulus n has %d digits, want a 2048-bit key", len(n))
	}
	for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
		if _, ok := k[private]; ok {
			t.Errorf("JWKS leaks private member %q", private)
		}
	}
	if _, jwks := iss.Fetches(); jwks != 1 {
		t.Errorf("JWKS fetches = %d, want 1", jwks)
	}
}

func TestTokenVerifiesAgainstPublishedJWKS(t *testing.T) {
	iss := NewIssuer(t)
	c := GitHubClaims("acme/widgets")
	before := time.Now().Truncate(time.Second)
	tok := iss.Token(c)

	jwt, err := jose.ParseSigned(tok)
	if err != nil {
		t.Fatal(err)
	}
	if h := jwt.Headers[0]; h.KeyID != iss.KeyID() || h.ExtraHeaders["typ"] != "JWT" {
		t.Errorf("header kid %q typ %v, want %q and JWT", h.KeyID, h.ExtraHeaders["typ"], iss.KeyID())
	}
	got, err := verify(tok, fetchJWKS(t, iss), iss.URL, DefaultAudience)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if got.Subject != "repo:acme/widgets:ref:refs/heads/main" || got.Repository != "acme/widgets" || got.JTI == "" {
		t.Errorf("claims %+v", got)
	}
	iat, exp := got.IssuedAt.Time(), got.Expiry.Time()
	if iat.Before(before) || exp.Sub(iat) != TokenLifetime || !got.NotBefore.Time().Equal(iat) {
		t.Errorf("iat %v nbf %v exp %v, want iat now, nbf iat, exp iat+%v", iat, got.NotBefore.Time(), exp, TokenLifetime)
	}

	// GitHub's shapes: aud one string, IDs strings, no empty environment.
	p := payload(t, tok)
	if string(p["aud"]) != `"wakegate"` || string(p["run_id"])[0] != '"' {
		t.Errorf("aud %s run_id %s, want JSON strings", p["aud"], p["run_id"])
	}
	if _, ok := p["environment"]; ok {
		t.Error("empty environment is sent")
	}
}

func TestTokenKeepsClaimsItIsGiven(t *testing.T) {
	iss := NewIssuer(t)
	c := GitHubClaims("acme/widgets")
	c.Audience = jose.Audience{"a", "b"}
	c.Environment = "prod"
	c.Subject = "repo:acme/widgets:environment:prod"
	tok := iss.Token(c)
	got, err := verify(tok, iss.JWKS(), iss.URL, "b")
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if got.Environment != "prod" || got.Subject != c.Subject {
		t.Errorf("environment %q sub %q", got.Environment, got.Subject)
	}
	if p := payload(t, tok); string(p["aud"]) != `["a","b"]` {
		t.Errorf("aud %s, want a list", p["aud"])
	}
}

func TestTokenIssuedLongAgoIsExpired(t *testing.T) {
	iss := NewIssuer(t)
	c := GitHubClaims("acme/widgets")
	c.IssuedAt = jose.NewNumericDate(time.Now().Add(-time.Hour))
	_, err := verify(iss.Token(c), iss.JWKS(), iss.URL, DefaultAudience)
	if !errors.Is(err, jose.ErrExpired) {
		t.Fatalf("verify: %v, want expired", err)
	}
}

func TestSignAddsNoDefaults(t *testing.T) {
	iss := NewIssuer(t)
	p := payload(t, iss.Sign(map[string]any{"iss": iss.URL, "sub": "x"}))
	for _, c := range []string{"exp", "aud", "jti"} {
		if _, ok := p[c]; ok {
			t.Errorf("Sign added %q", c)
		}
	}
}

func TestRotatePublishesOnlyNewKey(t *testing.T) {
	iss := NewIssuer(t)
	oldKid := iss.KeyID()
	oldTok := iss.Token(GitHubClaims("acme/widgets"))

	iss.Rotate()
	if iss.KeyID() == oldKid {
		t.Fatal("Rotate kept the kid")
	}
	set := fetchJWKS(t, iss)
	if len(set.Keys) != 1 || set.Keys[0].KeyID != iss.KeyID() {
		t.Fatalf("JWKS after Rotate = %v, want only %s", kids(set), iss.KeyID())
	}
	if _, err := verify(oldTok, set, iss.URL, DefaultAudience); !errors.Is(err, errUnknownKid) {
		t.Errorf("token of the old key: %v, want unknown kid", err)
	}
	if _, err := verify(iss.Token(GitHubClaims("acme/widgets")), set, iss.URL, DefaultAudience); err != nil {
		t.Errorf("token of the new key: %v", err)
	}
}

func TestRotateKeepOldPublishesBoth(t *testing.T) {
	iss := NewIssuer(t)
	oldKid := iss.KeyID()
	oldTok := iss.Token(GitHubClaims("acme/widgets"))
	iss.RotateKeepOld()
	set := fetchJWKS(t, iss)
	if got := kids(set); len(got) != 2 || !slices.Contains(got, oldKid) || !slices.Contains(got, iss.KeyID()) {
		t.Fatalf("JWKS = %v, want %s and %s", got, oldKid, iss.KeyID())
	}
	if _, err := verify(oldTok, set, iss.URL, DefaultAudience); err != nil {
		t.Errorf("token of the old key: %v", err)
	}
}

func kids(set jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

func TestUnpublishedTokenHasUnknownKid(t *testing.T) {
	iss := NewIssuer(t)
	tok := iss.UnpublishedToken(GitHubClaims("acme/widgets"))
	set := fetchJWKS(t, iss)
	if _, err := verify(tok, set, iss.URL, DefaultAudience); !errors.Is(err, errUnknownKid) {
		t.Fatalf("verify: %v, want unknown kid", err)
	}
	// Nor does any published key verify it under another name.
	jwt, err := jose.ParseSigned(tok)
	if err != nil {
		t.Fatal(err)
	}
	var out Claims
	if err := jwt.Claims(set.Keys[0].Key, &out); err == nil {
		t.Error("a published key verifies the unpublished token")
	}
	if out := payload(t, tok); string(out["iss"]) != `"`+iss.URL+`"` {
		t.Errorf("iss %s, want this issuer", out["iss"])
	}
}

func TestForeignTokenComesFromAnotherLiveIssuer(t *testing.T) {
	iss := NewIssuer(t)
	tok := iss.ForeignToken(GitHubClaims("acme/widgets"))
	foreign := iss.Foreign()
	if foreign.URL == iss.URL || !strings.HasPrefix(foreign.URL, "https://") {
		t.Fatalf("foreign URL %q", foreign.URL)
	}
	if _, err := verify(tok, fetchJWKS(t, iss), iss.URL, DefaultAudience); !errors.Is(err, errUnknownKid) {
		t.Errorf("against this issuer's keys: %v, want unknown kid", err)
	}
	got, err := verify(tok, fetchJWKS(t, foreign), foreign.URL, DefaultAudience)
	if err != nil {
		t.Fatalf("against the foreign issuer's keys: %v", err)
	}
	if got.Issuer != foreign.URL {
		t.Errorf("iss %q, want %q", got.Issuer, foreign.URL)
	}
	if disc, jwks := iss.Fetches(); disc != 0 || jwks != 1 {
		t.Errorf("this issuer's Fetches = %d, %d; want 0, 1", disc, jwks)
	}
}

func TestSetDownAnswers503(t *testing.T) {
	iss := NewIssuer(t)
	c := client(t)
	iss.SetDown(true)
	for _, path := range []string{"/.well-known/openid-configuration", "/.well-known/jwks"} {
		if code := get(t, c, iss.URL+path, nil); code != http.StatusServiceUnavailable {
			t.Errorf("%s while down: %d, want 503", path, code)
		}
	}
	iss.SetDown(false)
	if code := get(t, c, iss.URL+"/.well-known/jwks", nil); code != http.StatusOK {
		t.Errorf("JWKS when up again: %d", code)
	}
	if disc, jwks := iss.Fetches(); disc != 1 || jwks != 2 {
		t.Errorf("Fetches = %d, %d; want 1, 2 (refused requests count)", disc, jwks)
	}
}

func TestGitHubClaimsDefaults(t *testing.T) {
	c := GitHubClaims("acme/widgets")
	want := Claims{
		Subject:         "repo:acme/widgets:ref:refs/heads/main",
		Repository:      "acme/widgets",
		RepositoryOwner: "acme",
		Ref:             "refs/heads/main",
		RefType:         "branch",
		Workflow:        "CI",
		WorkflowRef:     "acme/widgets/.github/workflows/ci.yml@refs/heads/main",
		JobWorkflowRef:  "acme/widgets/.github/workflows/ci.yml@refs/heads/main",
		EventName:       "push",
		Actor:           "acme",
	}
	got := c
	got.RepositoryID, got.RepositoryOwnerID, got.ActorID, got.RunID = "", "", "", ""
	got.SHA, got.RunNumber, got.RunAttempt, got.RepositoryVisibility, got.RunnerEnvironment = "", "", "", "", ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GitHubClaims = %+v\nwant %+v", got, want)
	}
	if c.RepositoryID == "" || c.RunID == "" || len(c.SHA) != 40 || !reflect.DeepEqual(c, GitHubClaims("acme/widgets")) {
		t.Errorf("IDs not set or not stable: %+v", c)
	}
	if c.Issuer != "" || c.Audience != nil || c.Expiry != nil {
		t.Errorf("registered claims set: %+v", c)
	}
}
