package certs

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/smallstep/certificates/api"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"
)

// GitHub Actions hands a job that has 'permissions: id-token: write' these
// two variables: where to ask for an ID token, and the bearer to ask with.
const (
	envIDTokenURL   = "ACTIONS_ID_TOKEN_REQUEST_URL"
	envIDTokenToken = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
)

// ErrNoJobToken means the job cannot mint an ID token: it is not a GitHub
// Actions job, or it lacks the permission.
var ErrNoJobToken = errors.New("no GitHub Actions ID token available: $" + envIDTokenURL + " and $" + envIDTokenToken +
	" are unset; run in a GitHub Actions job with 'permissions: id-token: write'")

// GitHubIDToken asks GitHub Actions for an ID token for audience. A job may
// ask again at any time; each answer is a fresh token.
func GitHubIDToken(ctx context.Context, audience string) (string, error) {
	base, bearer := os.Getenv(envIDTokenURL), os.Getenv(envIDTokenToken)
	if base == "" || bearer == "" {
		return "", ErrNoJobToken
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("$%s: %w", envIDTokenURL, err)
	}
	q := u.Query()
	q.Set("audience", audience)
	u.RawQuery = q.Encode()

	rc := retryablehttp.NewClient()
	rc.RetryMax = 4
	rc.RetryWaitMin, rc.RetryWaitMax = 500*time.Millisecond, 5*time.Second
	rc.Logger = nil
	client := rc.StandardClient()
	client.Timeout = time.Minute
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "bearer "+bearer)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("request a GitHub Actions ID token from %s: %w", u.Host, netCause(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("request a GitHub Actions ID token: %s: %s (does the job have 'permissions: id-token: write'?)",
			resp.Status, strings.TrimSpace(string(body)))
	}
	var out struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Value == "" {
		return "", fmt.Errorf("request a GitHub Actions ID token: the answer holds no token")
	}
	return out.Value, nil
}

// EnrollOIDC exchanges a CI job's ID token for a client certificate at the
// CA API at caURL, trusting only the root with SHA-256 fingerprint. The CA
// names the certificate after the verified claims, so the request carries
// no names of its own. A zero ttl takes the CA's default.
func EnrollOIDC(ctx context.Context, caURL, fingerprint, idToken string, ttl time.Duration) (*Enrollment, error) {
	client, root, err := pinnedClient(caURL, fingerprint)
	if err != nil {
		return nil, err
	}
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	csr, err := x509util.CreateCertificateRequest("", nil, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	req := &api.SignRequest{CsrPEM: api.CertificateRequest{CertificateRequest: csr}, OTT: idToken}
	if ttl > 0 {
		req.NotAfter = provisioner.NewTimeDuration(time.Now().Add(ttl))
	}
	resp, err := client.SignWithContext(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("the CA at %s refused OIDC enrolment: %w", caURL, err)
	}
	return newEnrollment(tlsCert(chainOf(resp), key), root, client), nil
}

// OIDCRenewer renews by enrolling again with a fresh ID token from
// idToken: the job's identity is re-proved each time, never carried by
// the old certificate, so no mTLS renewal is needed.
func OIDCRenewer(caURL, fingerprint string, ttl time.Duration, idToken func(context.Context) (string, error)) RenewFunc {
	return func(ctx context.Context, _ *tls.Certificate) (*tls.Certificate, error) {
		tok, err := idToken(ctx)
		if err != nil {
			return nil, err
		}
		e, err := EnrollOIDC(ctx, caURL, fingerprint, tok, ttl)
		if err != nil {
			return nil, err
		}
		return e.Cert, nil
	}
}

// Retryable reports whether an enrolment failed for a reason that may pass:
// the CA API could not be reached, or answered with a server error (such
// as 503 while it cannot reach the OIDC issuer). Refusals are not.
func Retryable(err error) bool {
	var se interface{ StatusCode() int }
	var ue *unreachableError
	return errors.As(err, &ue) || errors.As(err, &se) && se.StatusCode() >= 500
}

// netCause digs the network error out of an HTTP client's error, which
// go-retryablehttp wraps in the URL twice over: "dial tcp HOST: connect:
// connection refused" says it all.
func netCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
