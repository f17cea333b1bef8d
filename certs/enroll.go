package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/smallstep/certificates/authority/provisioner"
	stepca "github.com/smallstep/certificates/ca"
	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/x509util"
)

// Enrollment is a client identity obtained from a CA's API, with what it
// needs to renew itself there.
type Enrollment struct {
	Cert  *tls.Certificate
	Roots *x509.CertPool
	// Root is the CA root in Roots, for configurations that carry the
	// trust bundle itself (Envoy's).
	Root   *x509.Certificate
	client *stepca.Client
}

// Enroll exchanges a one-time token for a client certificate at the CA API
// at caURL, trusting only a root whose SHA-256 fingerprint is fingerprint.
// No long-lived secret is needed: the token is spent by the exchange. A
// zero ttl takes the CA's default lifetime for clients.
func Enroll(ctx context.Context, caURL, fingerprint, token string, ttl time.Duration) (*Enrollment, error) {
	if err := CheckToken(token); err != nil {
		return nil, err
	}
	client, root, err := pinnedClient(caURL, fingerprint)
	if err != nil {
		return nil, err
	}
	req, key, err := stepca.CreateSignRequest(token)
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	if ttl > 0 {
		req.NotAfter = provisioner.NewTimeDuration(time.Now().Add(ttl))
	}
	resp, err := client.SignWithContext(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("the CA refused the token (already used, expired, or not issued by this CA; get a new one with 'wakegate certs token'): %w", err)
	}
	return newEnrollment(tlsCert(chainOf(resp), key), root, client), nil
}

func newEnrollment(cert *tls.Certificate, root *x509.Certificate, client *stepca.Client) *Enrollment {
	roots := x509.NewCertPool()
	roots.AddCert(root)
	return &Enrollment{Cert: cert, Roots: roots, Root: root, client: client}
}

// pinnedClient is a client of the CA API at caURL that trusts only the root
// whose SHA-256 fingerprint is fingerprint, and that root.
func pinnedClient(caURL, fingerprint string) (*stepca.Client, *x509.Certificate, error) {
	client, err := stepca.NewClient(caURL, stepca.WithRootSHA256(fingerprint))
	var ne net.Error
	switch {
	case errors.As(err, &ne):
		// Not reached (down, overloaded, wrong address): nothing is
		// known of its fingerprint yet.
		return nil, nil, &unreachableError{fmt.Errorf("cannot reach the CA API at %s (is --ca-url right, and the gateway up?): %w", caURL, netCause(err))}
	case err != nil:
		return nil, nil, fmt.Errorf("the CA at %s does not present a root with fingerprint %s (check --ca-url and --ca-fingerprint): %w", caURL, fingerprint, err)
	}
	root, err := client.Root(fingerprint)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch the root with fingerprint %s from %s: %w", fingerprint, caURL, err)
	}
	if got := x509util.Fingerprint(root.RootPEM.Certificate); !strings.EqualFold(got, fingerprint) {
		return nil, nil, fmt.Errorf("the CA at %s served a root with fingerprint %s, want %s", caURL, got, fingerprint)
	}
	return client, root.RootPEM.Certificate, nil
}

// CheckToken reads the token's form and expiry (unverified: the CA
// verifies) to fail with a clear message before any network call — and,
// for a command that validates its flags first, before it opens anything.
func CheckToken(token string) error {
	tok, err := jose.ParseSigned(token)
	if err != nil {
		return fmt.Errorf("the token is not a JWT (copy all of what 'wakegate certs token' printed): %w", err)
	}
	var claims jose.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return fmt.Errorf("read token claims: %w", err)
	}
	if claims.Expiry != nil && time.Now().After(claims.Expiry.Time()) {
		return fmt.Errorf("the token expired at %s: get a new one with 'wakegate certs token'", claims.Expiry.Time().UTC().Format(time.RFC3339))
	}
	return nil
}

// NewAPIRenewer renews through the CA API at caURL, trusting roots:
// smallstep's /renew, authenticated by mTLS with the current certificate.
func NewAPIRenewer(caURL string, roots *x509.CertPool) (RenewFunc, error) {
	client, err := stepca.NewClient(caURL, stepca.WithTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}))
	if err != nil {
		return nil, fmt.Errorf("CA client for %s: %w", caURL, err)
	}
	return (&Enrollment{Roots: roots, client: client}).Renew, nil
}

// Renew renews cur through the CA's /renew endpoint, authenticated with cur.
func (e *Enrollment) Renew(ctx context.Context, cur *tls.Certificate) (*tls.Certificate, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      e.Roots,
		Certificates: []tls.Certificate{*cur},
		MinVersion:   tls.VersionTLS12,
	}}
	defer tr.CloseIdleConnections()
	resp, err := e.client.RenewWithContext(ctx, tr)
	if err != nil {
		return nil, fmt.Errorf("renew through the CA API: %w", err)
	}
	return tlsCert(chainOf(resp), cur.PrivateKey), nil
}

// RenewTLS renews cur in-process, as the CA's /renew would.
func (a *Authority) RenewTLS(ctx context.Context, cur *tls.Certificate) (*tls.Certificate, error) {
	chain, err := a.Renew(ctx, cur.Leaf)
	if err != nil {
		return nil, err
	}
	return tlsCert(chain, cur.PrivateKey), nil
}

func tlsCert(chain []*x509.Certificate, key any) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// unreachableError is a CA API that could not be reached: retryable.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }
