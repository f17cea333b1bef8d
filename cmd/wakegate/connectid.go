package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// clientIdentity obtains the client certificate (by OIDC enrolment, by
// enrolling with a token, or from a credentials directory) and the renewer
// that keeps it fresh. Without a CA URL the renewer never renews: the
// certificate serves until it expires.
func clientIdentity(ctx context.Context, c *credFlags, progress io.Writer, log *slog.Logger) (*certs.Renewer, *x509.CertPool, error) {
	r, roots, err := clientCredentials(ctx, c, progress, log)
	if err != nil {
		return nil, nil, err
	}
	return r, poolOf(roots), nil
}

// clientCredentials is clientIdentity with the trusted roots as
// certificates, for configurations that carry them (Envoy's).
func clientCredentials(ctx context.Context, c *credFlags, progress io.Writer, log *slog.Logger) (*certs.Renewer, []*x509.Certificate, error) {
	switch {
	case c.oidc != "":
		return oidcIdentity(ctx, c, progress, log)
	case c.creds == "":
		// A token, read and checked with the flags (resolveToken).
		e, err := enrolRetrying(ctx, progress, func() (*certs.Enrollment, error) {
			return certs.Enroll(ctx, c.caURL, c.caFP, c.tok, c.certTTL)
		})
		if err != nil {
			return nil, nil, err
		}
		logEnrolled(log, e)
		r, err := certs.NewRenewer("client", e.Cert, e.Renew, log)
		return r, []*x509.Certificate{e.Root}, err
	}
	cert, _, err := certs.LoadClientCreds(c.creds)
	if err != nil {
		return nil, nil, err
	}
	roots, err := certs.LoadRoots(c.creds)
	if err != nil {
		return nil, nil, err
	}
	renew, err := dirRenewer(c.caURL, roots)
	if err != nil {
		return nil, nil, err
	}
	r, err := certs.NewRenewer("client", cert, renew, log)
	return r, roots, err
}

// dirRenewer renews credentials read from a directory through the CA API
// at caURL, or, without one, says how to replace them.
func dirRenewer(caURL string, roots []*x509.Certificate) (certs.RenewFunc, error) {
	if caURL == "" {
		return func(context.Context, *tls.Certificate) (*tls.Certificate, error) {
			return nil, errors.New("no --ca-url to renew at: issue new credentials with 'wakegate certs issue'")
		}, nil
	}
	return certs.NewAPIRenewer(caURL, poolOf(roots))
}

func poolOf(roots []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range roots {
		p.AddCert(r)
	}
	return p
}

// oidcIdentity enrols with the job's OIDC token, a fresh one per attempt.
func oidcIdentity(ctx context.Context, f *credFlags, progress io.Writer, log *slog.Logger) (*certs.Renewer, []*x509.Certificate, error) {
	idToken := func(ctx context.Context) (string, error) { return certs.GitHubIDToken(ctx, f.oidcAudience) }
	e, err := enrolRetrying(ctx, progress, func() (*certs.Enrollment, error) {
		tok, err := idToken(ctx)
		if err != nil {
			return nil, err
		}
		return certs.EnrollOIDC(ctx, f.caURL, f.caFP, tok, f.certTTL)
	})
	if err != nil {
		return nil, nil, err
	}
	logEnrolled(log, e)
	r, err := certs.NewRenewer("client", e.Cert, certs.OIDCRenewer(f.caURL, f.caFP, f.certTTL, idToken), log)
	return r, []*x509.Certificate{e.Root}, err
}

// enrolRetrying runs enrol until it succeeds, fails for good, or ctx ends.
// A CA API that cannot be reached, or answers 5xx (503 while it cannot
// reach the OIDC issuer), is retried with backoff from 1 s to 10 s and a
// progress line per retry; a refusal is returned at once. Retrying a
// single-use token is safe: a request that never reached the CA spent
// nothing, and one that did is refused as already used.
func enrolRetrying(ctx context.Context, progress io.Writer, enrol func() (*certs.Enrollment, error)) (*certs.Enrollment, error) {
	backoff := time.Second
	for {
		e, err := enrol()
		if err == nil || !certs.Retryable(err) {
			return e, err
		}
		fmt.Fprintf(progress, "wakegate: %v; retrying in %s\n", err, backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("enrol: %w (last error: %v)", context.Cause(ctx), err)
		case <-t.C:
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func logEnrolled(log *slog.Logger, e *certs.Enrollment) {
	log.Info("enrolled with the CA", "identity", e.Cert.Leaf.Subject.CommonName, "serial", e.Cert.Leaf.SerialNumber.String(),
		"not_after", e.Cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
}
