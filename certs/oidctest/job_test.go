package oidctest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// requestToken asks the job endpoint for a token the way actions/core
// does; it returns the status and, on 200, the JWT.
func requestToken(t *testing.T, c *http.Client, rawURL, authorization string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, ""
	}
	var body struct {
		Count int    `json:"count"`
		Value string `json:"value"`
	}
	if err := decode(resp.Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Value == "" || body.Count != len(body.Value) {
		t.Errorf("answer count %d value %d bytes", body.Count, len(body.Value))
	}
	return resp.StatusCode, body.Value
}

func TestJobEndpointLooksLikeGitHubs(t *testing.T) {
	iss := NewIssuer(t)
	job := iss.JobEndpoint(t, GitHubClaims("acme/widgets"))
	u, err := url.Parse(job.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "https" || u.Query().Get("api-version") != "2.0" || !strings.HasSuffix(u.Path, "/idtoken") {
		t.Errorf("URL %s, want https, a path ending /idtoken and ?api-version=2.0", job.URL)
	}
	want := []string{
		"ACTIONS_ID_TOKEN_REQUEST_URL=" + job.URL,
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN=" + job.RequestToken,
	}
	if got := job.Env(); !slices.Equal(got, want) || job.RequestToken == "" {
		t.Errorf("Env = %q", got)
	}
}

func TestJobEndpointHonoursAudience(t *testing.T) {
	iss := NewIssuer(t)
	job := iss.JobEndpoint(t, GitHubClaims("acme/widgets"))
	c := client(t)
	set := iss.JWKS()
	tests := []struct {
		name, query, wantAud string
	}{
		{"requested", "&audience=wakegate", "wakegate"},
		{"escaped", "&audience=" + url.QueryEscape("https://gw.example.com/x?y"), "https://gw.example.com/x?y"},
		{"none gives GitHub's default", "", "https://github.com/acme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, tok := requestToken(t, c, job.URL+tt.query, "bearer "+job.RequestToken)
			if code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			got, err := verify(tok, set, iss.URL, tt.wantAud)
			if err != nil {
				t.Fatalf("verify with aud %q: %v", tt.wantAud, err)
			}
			if got.Repository != "acme/widgets" {
				t.Errorf("repository %q", got.Repository)
			}
		})
	}
}

func TestJobEndpointChecksBearer(t *testing.T) {
	iss := NewIssuer(t)
	job := iss.JobEndpoint(t, GitHubClaims("acme/widgets"))
	c := client(t)
	tests := []struct {
		name, authorization string
		want                int
	}{
		{"bearer", "bearer " + job.RequestToken, http.StatusOK},
		{"Bearer", "Bearer " + job.RequestToken, http.StatusOK},
		{"BEARER", "BEARER " + job.RequestToken, http.StatusOK},
		{"missing", "", http.StatusUnauthorized},
		{"wrong token", "bearer " + job.RequestToken + "x", http.StatusUnauthorized},
		{"no scheme", job.RequestToken, http.StatusUnauthorized},
		{"basic", "Basic " + job.RequestToken, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, _ := requestToken(t, c, job.URL+"&audience=wakegate", tt.authorization); code != tt.want {
				t.Errorf("status %d, want %d", code, tt.want)
			}
		})
	}
	if got := job.Requests(); got != len(tests) {
		t.Errorf("Requests = %d, want %d (refused ones count)", got, len(tests))
	}
}

func TestJobEndpointRefusesReplacedQuery(t *testing.T) {
	iss := NewIssuer(t)
	job := iss.JobEndpoint(t, GitHubClaims("acme/widgets"))
	// The mistake of a client that treats the URL as having no query.
	code, _ := requestToken(t, client(t), job.URL+"?audience=wakegate", "bearer "+job.RequestToken)
	if code != http.StatusBadRequest {
		t.Errorf("status %d, want 400", code)
	}
}

func TestJobEndpointMintsFreshTokens(t *testing.T) {
	iss := NewIssuer(t)
	job := iss.JobEndpoint(t, GitHubClaims("acme/widgets"))
	c := client(t)
	jtis := map[string]bool{}
	for range 3 {
		_, tok := requestToken(t, c, job.URL+"&audience=wakegate", "bearer "+job.RequestToken)
		got, err := verify(tok, iss.JWKS(), iss.URL, "wakegate")
		if err != nil {
			t.Fatal(err)
		}
		jtis[got.JTI] = true
	}
	if len(jtis) != 3 {
		t.Errorf("3 requests gave %d distinct jti", len(jtis))
	}

	// New claims and a rotated key apply from the next request on.
	cl := GitHubClaims("acme/widgets")
	cl.Environment = "prod"
	cl.Subject = "repo:acme/widgets:environment:prod"
	job.SetClaims(cl)
	iss.Rotate()
	_, tok := requestToken(t, c, job.URL+"&audience=wakegate", "bearer "+job.RequestToken)
	got, err := verify(tok, iss.JWKS(), iss.URL, "wakegate")
	if err != nil {
		t.Fatalf("after SetClaims and Rotate: %v", err)
	}
	if got.Subject != cl.Subject || got.Environment != "prod" {
		t.Errorf("sub %q environment %q, want the new claims", got.Subject, got.Environment)
	}
	if job.Requests() != 4 {
		t.Errorf("Requests = %d, want 4", job.Requests())
	}
}

func decode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
