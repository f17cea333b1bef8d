package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/wakegate/wakegate/identity"
	"go.step.sm/crypto/jose"
)

// DefaultOIDCIssuer is GitHub Actions' token issuer; GitHub Enterprise
// Server's is https://HOST/_services/token.
const DefaultOIDCIssuer = "https://token.actions.githubusercontent.com"

// DefaultOIDCAudience is the audience wakegate asks GitHub for and accepts.
// It proves nothing about the caller (any repository can mint a token for
// any audience); it only keeps tokens meant for other services out.
const DefaultOIDCAudience = "wakegate"

// OIDCConfig enables OIDC enrolment at the CA API: a CI job exchanges its
// ID token (instead of a token an operator issued) for a client certificate
// that carries its claims.
type OIDCConfig struct {
	Issuer   string // tokens must come from here (exactly, https)
	Audience string // and name this audience
	// Enabled says whether enrolment is on at all (nil) or why not: the
	// gateway turns it off when it runs without a policy.
	Enabled func() error
	// Allow judges a job's verified claims; the CA signs only when it
	// returns nil. smallstep's OIDC provisioner checks signature, issuer,
	// audience and expiry only: who may connect is decided here.
	Allow func(identity.Claims) error
	// HTTPClient reaches the issuer; nil uses go-retryablehttp over the
	// system's roots (SSL_CERT_FILE applies).
	HTTPClient *http.Client
	// MinRefetch spaces the key-set fetches that unknown key ids cause
	// (5 s by default), so a stream of forged key ids cannot hammer the
	// issuer; a token with an unknown key id meanwhile is told to retry.
	MinRefetch time.Duration
	Log        *slog.Logger
}

// clockLeeway tolerates clock differences between the issuer and us.
const clockLeeway = 30 * time.Second

// signingAlgs are the algorithms accepted from an issuer: asymmetric only,
// so a public key can never serve as an HMAC secret.
var signingAlgs = []string{"RS256", "RS384", "RS512", "PS256", "ES256", "ES384"}

// oidcVerifier verifies ID tokens from one issuer.
type oidcVerifier struct {
	cfg  OIDCConfig
	keys *issuerKeys
}

func newOIDCVerifier(cfg OIDCConfig) (*oidcVerifier, error) {
	if !strings.HasPrefix(cfg.Issuer, "https://") {
		return nil, fmt.Errorf("OIDC issuer %q: must be an https URL", cfg.Issuer)
	}
	if cfg.Audience == "" {
		return nil, errors.New("OIDC: an audience is required")
	}
	if cfg.Allow == nil {
		return nil, errors.New("OIDC: no policy function (deny by default)")
	}
	if cfg.Enabled == nil {
		cfg.Enabled = func() error { return nil }
	}
	if cfg.MinRefetch <= 0 {
		cfg.MinRefetch = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cfg.Issuer = strings.TrimSuffix(cfg.Issuer, "/")
	return &oidcVerifier{cfg: cfg, keys: newIssuerKeys(cfg.Issuer, cfg.HTTPClient, cfg.MinRefetch, cfg.Log)}, nil
}

// jobClaims are the claims of a GitHub Actions ID token that wakegate reads.
type jobClaims struct {
	jose.Claims
	Repository  string `json:"repository"`
	Owner       string `json:"repository_owner"`
	Ref         string `json:"ref"`
	Workflow    string `json:"workflow"`
	Environment string `json:"environment"`
	EventName   string `json:"event_name"`
}

// refusal is a token refused with an HTTP status and words for the client.
type refusal struct {
	status int
	msg    string
	err    error // underlying cause, for logs
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.err }

func refuse(status int, format string, args ...any) *refusal {
	return &refusal{status: status, msg: fmt.Sprintf(format, args...)}
}

// looksLikeOIDC reports whether a token's (unverified) issuer is a URL:
// wakegate's own tokens name a provisioner instead.
func looksLikeOIDC(iss string) bool {
	return strings.HasPrefix(iss, "https://") || strings.HasPrefix(iss, "http://")
}

// unverifiedIssuer reads a JWT's issuer without verifying it, to route it.
func unverifiedIssuer(token string) string {
	tok, err := jose.ParseSigned(token)
	if err != nil {
		return ""
	}
	var c jose.Claims
	if tok.UnsafeClaimsWithoutVerification(&c) != nil {
		return ""
	}
	return c.Issuer
}

// verify checks an ID token and returns its claims: signed by a key the
// issuer publishes, from the configured issuer, for the configured
// audience, within its validity, naming a repository.
func (v *oidcVerifier) verify(ctx context.Context, raw string, now time.Time) (identity.Claims, *refusal) {
	if err := v.cfg.Enabled(); err != nil {
		return identity.Claims{}, &refusal{status: http.StatusForbidden, msg: err.Error(), err: err}
	}
	tok, err := jose.ParseSigned(raw)
	if err != nil {
		return identity.Claims{}, refuse(http.StatusBadRequest, "the OIDC token is not a signed JWT")
	}
	if len(tok.Headers) != 1 {
		return identity.Claims{}, refuse(http.StatusUnauthorized, "the OIDC token has %d signatures, want 1", len(tok.Headers))
	}
	h := tok.Headers[0]
	var c jobClaims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return identity.Claims{}, refuse(http.StatusBadRequest, "the OIDC token's claims do not parse")
	}
	if iss := strings.TrimSuffix(c.Issuer, "/"); iss != v.cfg.Issuer {
		return identity.Claims{}, refuse(http.StatusUnauthorized, "the OIDC token was issued by %q; this gateway trusts only %s (its --oidc-issuer)", c.Issuer, v.cfg.Issuer)
	}
	if !slices.Contains(signingAlgs, h.Algorithm) {
		return identity.Claims{}, refuse(http.StatusUnauthorized, "the OIDC token is signed with %q; accepted: %s", h.Algorithm, strings.Join(signingAlgs, ", "))
	}
	key, err := v.keys.key(ctx, h.KeyID)
	if err != nil {
		switch {
		case errors.Is(err, errIssuerDown):
			return identity.Claims{}, &refusal{status: http.StatusServiceUnavailable, err: err,
				msg: fmt.Sprintf("the gateway cannot reach the OIDC issuer %s to check the token; retry shortly", v.cfg.Issuer)}
		case errors.Is(err, errKeyNotYet):
			return identity.Claims{}, &refusal{status: http.StatusServiceUnavailable, err: err,
				msg: fmt.Sprintf("the OIDC token names key id %q, which the gateway has not seen yet; it refetches the issuer's keys at most every %s: retry shortly", h.KeyID, v.cfg.MinRefetch)}
		}
		return identity.Claims{}, &refusal{status: http.StatusUnauthorized, msg: err.Error(), err: err}
	}
	c = jobClaims{}
	if err := tok.Claims(key.Key, &c); err != nil {
		return identity.Claims{}, &refusal{status: http.StatusUnauthorized, err: err,
			msg: fmt.Sprintf("the OIDC token's signature does not verify with the issuer's key %q", h.KeyID)}
	}
	if !c.Audience.Contains(v.cfg.Audience) {
		return identity.Claims{}, refuse(http.StatusUnauthorized, "the OIDC token is for audience %q; this gateway accepts %q (request it with --oidc-audience %s)",
			strings.Join(c.Audience, ","), v.cfg.Audience, v.cfg.Audience)
	}
	switch err := c.ValidateWithLeeway(jose.Expected{Time: now}, clockLeeway); {
	case err == nil:
	case errors.Is(err, jose.ErrExpired):
		return identity.Claims{}, refuse(http.StatusUnauthorized, "the OIDC token expired at %s (now %s): request a fresh one",
			c.Expiry.Time().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	default:
		return identity.Claims{}, refuse(http.StatusUnauthorized, "the OIDC token is not valid yet (%v): check the clocks", err)
	}
	if c.Expiry == nil {
		return identity.Claims{}, refuse(http.StatusUnauthorized, "the OIDC token has no expiry")
	}
	if c.Repository == "" || c.Subject == "" {
		return identity.Claims{}, refuse(http.StatusUnauthorized, "the OIDC token names no repository or subject: is it from GitHub Actions?")
	}
	return identity.Claims{
		Issuer: v.cfg.Issuer, Subject: c.Subject, Repository: c.Repository, Owner: c.Owner, Ref: c.Ref,
		Workflow: c.Workflow, Environment: c.Environment, EventName: c.EventName,
	}, nil
}

// claimAttrs are a job's claims as log attributes.
func claimAttrs(c identity.Claims) []any {
	return []any{"repository", c.Repository, "owner", c.Owner, "ref", c.Ref, "workflow", c.Workflow,
		"environment", c.Environment, "event_name", c.EventName, "sub", c.Subject}
}
