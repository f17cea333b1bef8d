package certs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"go.step.sm/crypto/jose"
)

// issuerKeys holds an OIDC issuer's signing keys, fetched through its
// discovery document. smallstep's OIDC provisioner is not used for this:
// it fails the whole authority when the issuer is down at start, and it
// never refetches the key set when a token names a key it does not know,
// so an issuer's key rotation would refuse every job for up to 12 hours.
type issuerKeys struct {
	issuer     string
	client     *http.Client
	minRefetch time.Duration // between two fetches caused by unknown key ids
	now        func() time.Time
	log        *slog.Logger

	mu      sync.Mutex // guards the fields below; held across a fetch so concurrent misses fetch once
	keys    *jose.JSONWebKeySet
	fetched time.Time // last fetch attempt
	lastErr error     // of the last attempt, nil when it succeeded
}

// errIssuerDown marks a failure to reach the issuer: retryable, unlike a
// refusal of the token.
var errIssuerDown = errors.New("OIDC issuer unreachable")

// errKeyNotYet marks a key id that is unknown while a refetch must wait:
// retryable, since an issuer that just rotated publishes it by then.
var errKeyNotYet = errors.New("unknown key id; the issuer's keys are refetched at most every few seconds")

func newIssuerKeys(issuer string, client *http.Client, minRefetch time.Duration, log *slog.Logger) *issuerKeys {
	if client == nil {
		rc := retryablehttp.NewClient()
		rc.RetryMax = 2
		rc.RetryWaitMin, rc.RetryWaitMax = 200*time.Millisecond, time.Second
		rc.Logger = nil
		client = rc.StandardClient()
		client.Timeout = 15 * time.Second
	}
	return &issuerKeys{issuer: strings.TrimSuffix(issuer, "/"), client: client, minRefetch: minRefetch, now: time.Now, log: log}
}

// run fetches the keys until it succeeds once, backing off from 1 s to
// 1 min, so that a gateway started while its issuer is down serves
// everything else at once and OIDC enrolment as soon as the issuer answers.
// Afterwards it refreshes the set hourly. It returns when ctx ends.
func (k *issuerKeys) run(ctx context.Context) {
	backoff := time.Second
	for {
		wait := time.Hour
		if err := k.refresh(ctx); err != nil {
			k.log.Warn("OIDC issuer unreachable; enrolment refused until it answers", "issuer", k.issuer, "retry_in", backoff.String(), "err", err)
			wait, backoff = backoff, min(2*backoff, time.Minute)
		} else {
			backoff = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// refresh fetches the discovery document and the key set.
func (k *issuerKeys) refresh(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fetchLocked(ctx)
}

func (k *issuerKeys) fetchLocked(ctx context.Context) error {
	k.fetched = k.now()
	set, err := k.fetch(ctx)
	k.lastErr = err
	if err != nil {
		return err
	}
	first := k.keys == nil
	k.keys = set
	if first {
		k.log.Info("OIDC issuer keys loaded", "issuer", k.issuer, "keys", len(set.Keys))
	} else {
		k.log.Debug("OIDC issuer keys refreshed", "issuer", k.issuer, "keys", len(set.Keys))
	}
	return nil
}

// Limits on what the issuer may send: its documents are small.
const maxIssuerDoc = 256 << 10

func (k *issuerKeys) fetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := k.getJSON(ctx, k.issuer+"/.well-known/openid-configuration", &disc); err != nil {
		return nil, err
	}
	if strings.TrimSuffix(disc.Issuer, "/") != k.issuer {
		return nil, fmt.Errorf("the discovery document of %s names issuer %q: check --oidc-issuer", k.issuer, disc.Issuer)
	}
	if !strings.HasPrefix(disc.JWKSURI, "https://") {
		return nil, fmt.Errorf("the discovery document of %s has no https jwks_uri (%q)", k.issuer, disc.JWKSURI)
	}
	var set jose.JSONWebKeySet
	if err := k.getJSON(ctx, disc.JWKSURI, &set); err != nil {
		return nil, err
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("the key set of %s at %s is empty", k.issuer, disc.JWKSURI)
	}
	return &set, nil
}

func (k *issuerKeys) getJSON(ctx context.Context, url string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: GET %s: %w", errIssuerDown, url, netCause(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIssuerDoc+1))
	if err != nil {
		return fmt.Errorf("%w: GET %s: %w", errIssuerDown, url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: GET %s: %s", errIssuerDown, url, resp.Status)
	}
	if len(body) > maxIssuerDoc {
		return fmt.Errorf("GET %s: answer larger than %d bytes", url, maxIssuerDoc)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// key returns the issuer's key kid. An unknown kid refetches the set (at
// most once per minRefetch), since issuers rotate keys without notice.
func (k *issuerKeys) key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys != nil {
		if ks := k.keys.Key(kid); len(ks) > 0 {
			return &ks[0], nil
		}
	}
	refetched := false
	if k.fetched.IsZero() || k.now().Sub(k.fetched) >= k.minRefetch {
		refetched = true
		if err := k.fetchLocked(ctx); err != nil && k.keys == nil {
			return nil, err
		}
	}
	if k.keys == nil {
		return nil, fmt.Errorf("%w: %w", errIssuerDown, k.lastErr)
	}
	if ks := k.keys.Key(kid); len(ks) > 0 {
		return &ks[0], nil
	}
	if !refetched {
		return nil, errKeyNotYet
	}
	return nil, fmt.Errorf("the token is signed with key id %q, which the issuer %s does not publish", kid, k.issuer)
}
