package oidctest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.step.sm/crypto/jose"
)

// Job emulates the ID-token endpoint GitHub gives a job that has
// "permissions: id-token: write".
type Job struct {
	// URL is ACTIONS_ID_TOKEN_REQUEST_URL. It already holds a query
	// string (api-version=2.0): a client appends "&audience=AUD".
	URL string
	// RequestToken is ACTIONS_ID_TOKEN_REQUEST_TOKEN, the bearer token
	// the endpoint wants.
	RequestToken string

	iss      *Issuer
	srv      *httptest.Server
	requests atomic.Int64

	mu     sync.Mutex // guards claims and mint
	claims Claims
	mint   func(Claims) string // nil: the issuer's current key
}

// SetMint makes the endpoint answer with mint(claims) instead of a token
// of the issuer's current key: a job whose tokens come from elsewhere
// (iss.UnpublishedToken, iss.ForeignToken). nil restores the default.
func (j *Job) SetMint(mint func(Claims) string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.mint = mint
}

// JobEndpoint starts a job's token endpoint, on the same test root as the
// issuer. Each authorized request gets a fresh token from i, minted from c
// with aud set to the requested audience (GitHub's default
// "https://github.com/OWNER" when none is asked for) and a new jti, iat
// and exp unless c sets them. The endpoint closes on t.Cleanup.
func (i *Issuer) JobEndpoint(t testing.TB, c Claims) *Job {
	t.Helper()
	tok := make([]byte, 32)
	rand.Read(tok)
	j := &Job{iss: i, claims: c, RequestToken: base64.RawURLEncoding.EncodeToString(tok)}
	path := "/_apis/distributedtask/hubs/Actions/plans/" + uuid() + "/jobs/" + uuid() + "/idtoken"
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+path, j.serveToken)
	srv, err := startTLS(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.requests.Add(1)
		mux.ServeHTTP(w, r)
	}))
	if err != nil {
		t.Fatalf("oidctest: start job endpoint: %v", err)
	}
	j.srv = srv
	j.URL = srv.URL + path + "?api-version=2.0"
	t.Cleanup(srv.Close)
	return j
}

// Env is the job's environment for the token client:
// ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN.
func (j *Job) Env() []string {
	return []string{
		"ACTIONS_ID_TOKEN_REQUEST_URL=" + j.URL,
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN=" + j.RequestToken,
	}
}

// Requests counts the requests the endpoint received, refused ones
// included.
func (j *Job) Requests() int { return int(j.requests.Load()) }

// SetClaims changes the claims of the tokens minted from the next request
// on.
func (j *Job) SetClaims(c Claims) {
	j.mu.Lock()
	j.claims = c
	j.mu.Unlock()
}

// tokenResponse is the endpoint's answer. Clients read only value; count
// mirrors GitHub's answer, where it is the length of value.
type tokenResponse struct {
	Count int    `json:"count"`
	Value string `json:"value"`
}

func (j *Job) serveToken(w http.ResponseWriter, r *http.Request) {
	if !j.authorized(r.Header.Get("Authorization")) {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeError(w, http.StatusUnauthorized, "TF400813: The user '' is not authorized to access this resource.")
		return
	}
	q := r.URL.Query()
	// A client that adds "?audience=" instead of "&audience=" turns the
	// version into "2.0?audience=..." and its audience is lost: refuse,
	// so such a client fails here rather than against GitHub.
	if q.Get("api-version") != "2.0" {
		writeError(w, http.StatusBadRequest, "api-version must be 2.0 (append &audience=AUD to ACTIONS_ID_TOKEN_REQUEST_URL, keep its query)")
		return
	}
	j.mu.Lock()
	c, mint := j.claims, j.mint
	j.mu.Unlock()
	aud := q.Get("audience")
	if aud == "" {
		aud = c.defaultAudience()
	}
	c.Audience = jose.Audience{aud}
	if mint != nil {
		writeJSON(w, tokenResponse{Count: 1, Value: mint(c)})
		return
	}
	tok, err := j.iss.currentKey().sign(c.filled(j.iss.URL))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, tokenResponse{Count: len(tok), Value: tok})
}

// authorized checks "Authorization: bearer TOKEN"; the scheme is
// case-insensitive, as in actions/core (which sends "Bearer").
func (j *Job) authorized(header string) bool {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(j.RequestToken)) == 1
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	b, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{msg})
	w.Write(b)
}
