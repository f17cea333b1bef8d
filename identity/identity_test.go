package identity

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"
)

func certWith(cn string, uris ...string) *x509.Certificate {
	c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			panic(err)
		}
		c.URIs = append(c.URIs, u)
	}
	return c
}

func TestClaimsSurviveTheCertificateRoundTrip(t *testing.T) {
	want := Claims{Issuer: "https://token.actions.githubusercontent.com", Subject: "repo:acme/app:environment:prod",
		Repository: "acme/app", Owner: "acme", Ref: "refs/heads/feat/a&b=c", Workflow: "CI / build", Environment: "prod", EventName: "push"}
	p := FromCert(certWith("github:acme/app", RepoURI("acme/app"), want.URI()))
	if p.OIDC == nil || *p.OIDC != want {
		t.Fatalf("claims = %+v, want %+v", p.OIDC, want)
	}
	if p.Name != "github:acme/app" || p.Repo != "acme/app" || p.AffinityKey() != "repo:acme/app" {
		t.Fatalf("peer = %+v (key %q)", p, p.AffinityKey())
	}
}

func TestNamedCertificatesHaveNoClaims(t *testing.T) {
	for _, tc := range []struct {
		cert    *x509.Certificate
		key     string
		hasOIDC bool
	}{
		{certWith("team-a"), "team-a", false},
		{certWith("team-a", RepoURI("acme/app")), "repo:acme/app", false},
		// A claims URI without a repository is not claims.
		{certWith("x", "wakegate://oidc?ref=refs%2Fheads%2Fmain"), "x", false},
		{certWith("x", "wakegate://other?repository=acme%2Fapp"), "x", false},
	} {
		p := FromCert(tc.cert)
		if p.AffinityKey() != tc.key || (p.OIDC != nil) != tc.hasOIDC {
			t.Errorf("%v: key %q claims %+v; want key %q", tc.cert.URIs, p.AffinityKey(), p.OIDC, tc.key)
		}
	}
}
