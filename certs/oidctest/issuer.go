package oidctest

import (
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"go.step.sm/crypto/jose"
)

// Issuer emulates GitHub Actions' OIDC issuer: discovery and JWKS over
// HTTPS, and RS256 ID tokens signed by its current key.
type Issuer struct {
	// URL is the issuer, "https://127.0.0.1:PORT" without a trailing
	// slash: the iss of its tokens and the base of its endpoints.
	URL string

	t   testing.TB
	srv *httptest.Server

	discoveryFetches atomic.Int64
	jwksFetches      atomic.Int64
	down             atomic.Bool

	foreignOnce sync.Once
	foreign     *Issuer // set once by foreignOnce

	mu          sync.Mutex // guards the keys below
	current     signingKey
	published   []signingKey      // what the JWKS serves
	unpublished *signingKey       // made on first UnpublishedToken
	held        []*rsa.PrivateKey // every key taken from keyPool, given back on close
}

// NewIssuer starts an issuer with one fresh key. It closes on t.Cleanup.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	i := &Issuer{t: t}
	i.current = i.newKey()
	i.published = []signingKey{i.current}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", i.serveDiscovery)
	mux.HandleFunc("GET /.well-known/jwks", i.serveJWKS)
	srv, err := startTLS(mux)
	if err != nil {
		i.giveBack()
		t.Fatalf("oidctest: start issuer: %v", err)
	}
	i.srv = srv
	i.URL = srv.URL
	t.Cleanup(i.close)
	return i
}

func (i *Issuer) close() {
	// Close waits for requests in flight, so no handler reads a key after
	// the keys go back to the pool.
	i.srv.Close()
	i.giveBack()
}

func (i *Issuer) giveBack() {
	i.mu.Lock()
	held := i.held
	i.held = nil
	i.mu.Unlock()
	giveKeys(held)
}

// newKey takes a key from the pool and remembers to give it back.
func (i *Issuer) newKey() signingKey {
	k := newSigningKey() // slow when the pool is empty: outside mu
	i.mu.Lock()
	i.held = append(i.held, k.priv)
	i.mu.Unlock()
	return k
}

func (i *Issuer) currentKey() signingKey {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current
}

// KeyID is the kid of the current signing key.
func (i *Issuer) KeyID() string { return i.currentKey().kid }

// Rotate makes a new current key under a new kid, and the JWKS publishes
// only that key: a hard rotation. A verifier holding the old set must
// refetch when it meets the unknown kid, and tokens signed before the
// rotation no longer verify against the new set.
func (i *Issuer) Rotate() {
	k := i.newKey()
	i.mu.Lock()
	i.current = k
	i.published = []signingKey{k}
	i.mu.Unlock()
}

// RotateKeepOld makes a new current key and publishes it beside the keys
// already published, as an issuer that pre-announces its next key does.
func (i *Issuer) RotateKeepOld() {
	k := i.newKey()
	i.mu.Lock()
	i.current = k
	i.published = append([]signingKey{k}, i.published...)
	i.mu.Unlock()
}

// JWKS is the key set the issuer publishes now.
func (i *Issuer) JWKS() jose.JSONWebKeySet {
	i.mu.Lock()
	defer i.mu.Unlock()
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(i.published))}
	for _, k := range i.published {
		set.Keys = append(set.Keys, k.public())
	}
	return set
}

// SetDown makes both endpoints answer 503 while down is true.
func (i *Issuer) SetDown(down bool) { i.down.Store(down) }

// Fetches counts the requests the discovery and JWKS endpoints received,
// those answered 503 included.
func (i *Issuer) Fetches() (discovery, jwks int) {
	return int(i.discoveryFetches.Load()), int(i.jwksFetches.Load())
}

// Token signs c with the current key (RS256, header kid and typ JWT),
// after filling where zero: iss URL, aud DefaultAudience, a random jti,
// iat now, nbf iat and exp iat+TokenLifetime.
func (i *Issuer) Token(c Claims) string {
	return i.currentKey().mustSign(c.filled(i.URL))
}

// UnpublishedToken is Token signed instead by a key this issuer never
// publishes, under a kid no JWKS holds: a verifier must refuse it, even
// after refetching the set. Every call uses the same unpublished key.
func (i *Issuer) UnpublishedToken(c Claims) string {
	i.mu.Lock()
	k := i.unpublished
	i.mu.Unlock()
	if k == nil {
		nk := i.newKey()
		i.mu.Lock()
		if i.unpublished == nil {
			i.unpublished = &nk
		}
		k = i.unpublished
		i.mu.Unlock()
	}
	return k.mustSign(c.filled(i.URL))
}

// ForeignToken is a token from another issuer: Foreign().Token(c), so iss
// (where zero) is that issuer's URL and the signing key is one this issuer
// never had. The other issuer is live, trusted by TLS like this one, and
// its keys are fetchable: a verifier must refuse the token because it does
// not trust the issuer, not because it could not reach it.
func (i *Issuer) ForeignToken(c Claims) string { return i.Foreign().Token(c) }

// Foreign is the other issuer behind ForeignToken, started on first use
// and closed with this one. Its Fetches tell whether a verifier contacted
// an issuer it should not trust.
func (i *Issuer) Foreign() *Issuer {
	i.foreignOnce.Do(func() { i.foreign = NewIssuer(i.t) })
	return i.foreign
}

// Sign signs claims exactly as given, with no defaults, by the current
// key: for tokens Claims cannot express (no exp, aud as a list, claims of
// the wrong type). claims must marshal to a JSON object.
func (i *Issuer) Sign(claims any) string {
	return i.currentKey().mustSign(claims)
}

// discovery is GitHub's /.well-known/openid-configuration document.
type discovery struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	ClaimsSupported                  []string `json:"claims_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	ScopesSupported                  []string `json:"scopes_supported"`
}

// claimsSupported is the list GitHub's discovery document advertises.
var claimsSupported = []string{
	"sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "sha",
	"repository", "repository_id", "repository_owner", "repository_owner_id",
	"enterprise", "enterprise_id", "run_id", "run_number", "run_attempt",
	"actor", "actor_id", "workflow", "workflow_ref", "workflow_sha",
	"head_ref", "base_ref", "event_name", "ref_type", "ref_protected",
	"environment", "environment_node_id", "job_workflow_ref",
	"job_workflow_sha", "repository_visibility", "runner_environment",
	"issuer_scope",
}

func (i *Issuer) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	i.discoveryFetches.Add(1)
	if i.down.Load() {
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, discovery{
		Issuer:                           i.URL,
		JWKSURI:                          i.URL + "/.well-known/jwks",
		SubjectTypesSupported:            []string{"public", "pairwise"},
		ResponseTypesSupported:           []string{"id_token"},
		ClaimsSupported:                  claimsSupported,
		IDTokenSigningAlgValuesSupported: []string{"RS256"},
		ScopesSupported:                  []string{"openid"},
	})
}

func (i *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	i.jwksFetches.Add(1)
	if i.down.Load() {
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, i.JWKS())
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(b)
}
