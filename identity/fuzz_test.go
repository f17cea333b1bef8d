package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"regexp"
	"testing"
	"time"
)

// fuzzKey signs the certificates FuzzFromCert builds: one per process, as
// generating a key per input would dominate the run.
var fuzzKey = func() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

// derCert is a real certificate carrying uris, through DER and back, so
// the round trip includes x509's own encoding of URI SANs. ok is false when
// x509 refuses the SANs (not IA5, say): no CA could issue them either.
func derCert(cn string, uris []*url.URL) (*x509.Certificate, bool) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0), URIs: uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, fuzzKey.Public(), fuzzKey)
	if err != nil {
		return nil, false
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, false
	}
	return c, true
}

// githubRepo is the shape of a GitHub OWNER/NAME: the names RepoURI is
// given (by an operator's --repo, or a verified token's repository claim).
var githubRepo = regexp.MustCompile(`^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$`)

// FuzzFromCert: whatever URI SANs a certificate carries, FromCert and Role
// do not panic; claims it reads name a repository and survive being
// written again; claims with a repository survive the certificate round
// trip exactly; a GitHub-shaped repository survives RepoURI.
func FuzzFromCert(f *testing.F) {
	f.Add("wakegate://oidc?iss=https%3A%2F%2Ftoken.actions.githubusercontent.com&repository=acme%2Fapp&ref=refs%2Fheads%2Fmain",
		"wakegate://repo/acme/app", "wakegate://role/gateway",
		"https://token.actions.githubusercontent.com", "repo:acme/app:ref:refs/heads/main", "acme/app", "acme",
		"refs/heads/main", "CI", "", "push")
	f.Fuzz(func(t *testing.T, claimsURI, repoURI, roleURI, iss, sub, repo, owner, ref, workflow, env, event string) {
		// Arbitrary SANs, as url.Parse (and so x509) reads them.
		var uris []*url.URL
		for _, s := range []string{claimsURI, repoURI, roleURI} {
			if u, err := url.Parse(s); err == nil {
				uris = append(uris, u)
			}
		}
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: "x"}, URIs: uris}
		p := FromCert(cert)
		Role(cert)
		p.AffinityKey()
		if p.OIDC != nil {
			if p.OIDC.Repository == "" {
				t.Fatalf("claims without a repository read from %q", claimsURI)
			}
			again := FromCert(&x509.Certificate{URIs: []*url.URL{mustParse(t, p.OIDC.URI())}})
			if again.OIDC == nil || *again.OIDC != *p.OIDC {
				t.Fatalf("claims %+v read from %q do not survive URI(): %+v", *p.OIDC, claimsURI, again.OIDC)
			}
		}

		// Claims round trip through a real certificate.
		c := Claims{Issuer: iss, Subject: sub, Repository: repo, Owner: owner, Ref: ref,
			Workflow: workflow, Environment: env, EventName: event}
		if c.Repository != "" {
			cert, ok := derCert("github:job", []*url.URL{mustParse(t, c.URI())})
			if !ok {
				t.Fatalf("x509 refuses the claims SAN %q", c.URI())
			}
			got := FromCert(cert)
			if got.OIDC == nil || *got.OIDC != c {
				t.Fatalf("claims %+v came back as %+v (SAN %q)", c, got.OIDC, c.URI())
			}
		}
		if githubRepo.MatchString(repo) {
			got := FromCert(&x509.Certificate{URIs: []*url.URL{mustParse(t, RepoURI(repo))}})
			if got.Repo != repo || got.AffinityKey() != "repo:"+repo {
				t.Fatalf("repository %q came back as %q", repo, got.Repo)
			}
		}
	})
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return u
}
