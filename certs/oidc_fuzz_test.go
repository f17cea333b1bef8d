package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wakegate/wakegate/identity"
	"go.step.sm/crypto/jose"
)

// The fuzz issuer's URL and key id are fixed so that checked-in seeds can
// name them and reach the signature check; its key is made once per
// process and never leaves it, so no seed and no fuzzed input can carry a
// signature it makes.
const (
	fuzzIssuerURL = "https://issuer.fuzz.invalid"
	fuzzKeyID     = "fuzz-key"
)

// fuzzNow is the verifier's clock in the fuzz targets: seeds stay valid
// (or expired) whenever they run.
var fuzzNow = time.Unix(1_700_000_000, 0)

// fuzzIssuer serves an OIDC issuer's discovery document and key set in
// process, as an http.RoundTripper: no sockets, so a fuzz run is not bound
// by the network and leaves nothing open.
type fuzzIssuer struct {
	key  *ecdsa.PrivateKey
	down atomic.Bool // answer 503 to everything
	mux  *http.ServeMux
}

var fuzzIssuerOnce = sync.OnceValue(func() *fuzzIssuer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	i := &fuzzIssuer{key: key, mux: http.NewServeMux()}
	i.mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": fuzzIssuerURL, "jwks_uri": fuzzIssuerURL + "/.well-known/jwks"})
	})
	i.mux.HandleFunc("GET /.well-known/jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &key.PublicKey, KeyID: fuzzKeyID, Algorithm: jose.ES256, Use: "sig"}}})
	})
	return i
})

func (i *fuzzIssuer) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	if i.down.Load() || r.URL.Host != strings.TrimPrefix(fuzzIssuerURL, "https://") {
		rec.WriteHeader(http.StatusServiceUnavailable)
	} else {
		i.mux.ServeHTTP(rec, r)
	}
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// sign signs payload, whatever its bytes, as a compact ES256 JWS by the
// issuer's key under kid.
func (i *fuzzIssuer) sign(t *testing.T, payload []byte, kid string) string {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: i.key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (i *fuzzIssuer) verifier(t testing.TB) *oidcVerifier {
	v, err := newOIDCVerifier(OIDCConfig{
		Issuer: fuzzIssuerURL, Audience: DefaultOIDCAudience,
		Allow:      func(identity.Claims) error { return nil },
		HTTPClient: &http.Client{Transport: i},
		// Every unknown key id refetches: no refusal depends on the
		// order inputs came in.
		MinRefetch: time.Nanosecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// FuzzUnverifiedIssuer: unverifiedIssuer does not panic on any string, and
// reads back the issuer of any token it is given, whatever that issuer is.
func FuzzUnverifiedIssuer(f *testing.F) {
	f.Add("", "https://token.actions.githubusercontent.com")
	iss := fuzzIssuerOnce()
	f.Fuzz(func(t *testing.T, token, issuer string) {
		unverifiedIssuer(token)
		if !utf8.ValidString(issuer) {
			return // JSON cannot carry it as such
		}
		payload, err := json.Marshal(map[string]string{"iss": issuer})
		if err != nil {
			t.Fatal(err)
		}
		if got := unverifiedIssuer(iss.sign(t, payload, "k")); got != issuer {
			t.Fatalf("unverifiedIssuer of a token from %q = %q", issuer, got)
		}
	})
}

// FuzzOIDCVerify: verify never panics, never returns claims for a token
// string the fuzzer made (it cannot sign with the issuer's key), and
// refuses with a client error, or 503 only while the issuer is down. When
// the issuer's key signs an arbitrary payload, verify accepts it only if
// the payload, read independently, holds every claim the verifier
// promises — the issuer, the audience, an unexpired exp, nbf and iat not
// in the future, a repository and a subject — and returns exactly those
// claims.
func FuzzOIDCVerify(f *testing.F) {
	f.Add("", []byte("{}"), false)
	iss := fuzzIssuerOnce()
	v := iss.verifier(f)
	f.Fuzz(func(t *testing.T, token string, payload []byte, down bool) {
		iss.down.Store(down)
		defer iss.down.Store(false)
		ctx := t.Context()
		if c, ref := v.verify(ctx, token, fuzzNow); ref == nil {
			t.Fatalf("verify accepted a token the fuzzer made: %q → %+v", token, c)
		} else {
			checkRefusal(t, ref, down)
		}

		tok := iss.sign(t, payload, fuzzKeyID)
		c, ref := v.verify(ctx, tok, fuzzNow)
		if ref != nil {
			checkRefusal(t, ref, down)
			return
		}
		want, why := promised(payload)
		if why != "" {
			t.Fatalf("verify accepted %s: %s", payload, why)
		}
		if c != want {
			t.Fatalf("verify of %s = %+v, want %+v", payload, c, want)
		}
	})
}

func checkRefusal(t *testing.T, ref *refusal, down bool) {
	t.Helper()
	switch {
	case ref.msg == "":
		t.Fatalf("refusal %d without words: %v", ref.status, ref.err)
	case ref.status == http.StatusServiceUnavailable && !down:
		t.Fatalf("503 while the issuer is up: %s", ref.msg)
	case ref.status != http.StatusServiceUnavailable && (ref.status < 400 || ref.status >= 500):
		t.Fatalf("refusal status %d: %s", ref.status, ref.msg)
	}
}

// promised reads payload with encoding/json, not go-jose's reader, and
// says what verify must return for it, or why it must refuse it.
func promised(payload []byte) (identity.Claims, string) {
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		return identity.Claims{}, "a payload that is not a JSON object: " + err.Error()
	}
	str := func(k string) string { s, _ := m[k].(string); return s }
	if strings.TrimSuffix(str("iss"), "/") != fuzzIssuerURL {
		return identity.Claims{}, "another issuer"
	}
	switch aud := m["aud"].(type) {
	case string:
		if aud != DefaultOIDCAudience {
			return identity.Claims{}, "another audience"
		}
	case []any:
		if !slices.Contains(aud, any(DefaultOIDCAudience)) {
			return identity.Claims{}, "another audience"
		}
	default:
		return identity.Claims{}, "no audience"
	}
	now, leeway := float64(fuzzNow.Unix()), clockLeeway.Seconds()
	exp, ok := m["exp"].(float64)
	if !ok {
		return identity.Claims{}, "no numeric expiry"
	}
	if exp < now-leeway {
		return identity.Claims{}, "expired"
	}
	for _, k := range []string{"nbf", "iat"} {
		if t, ok := m[k].(float64); ok && t > now+leeway {
			return identity.Claims{}, k + " in the future"
		}
	}
	if str("repository") == "" || str("sub") == "" {
		return identity.Claims{}, "no repository or subject"
	}
	return identity.Claims{Issuer: fuzzIssuerURL, Subject: str("sub"), Repository: str("repository"),
		Owner: str("repository_owner"), Ref: str("ref"), Workflow: str("workflow"),
		Environment: str("environment"), EventName: str("event_name")}, ""
}
