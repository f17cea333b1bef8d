package identity

import (
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"strings"
)

// RepoURIPrefix begins the URI SAN that names the repository a client
// certificate builds: wakegate://repo/OWNER/NAME. The gateway routes on it,
// so every job of a repository finds the engine holding its cache, whatever
// the job's identity.
const RepoURIPrefix = "wakegate://repo/"

// RepoURI is the SAN for repository repo.
func RepoURI(repo string) string {
	return RepoURIPrefix + strings.TrimPrefix(repo, "/")
}

// Peer is what a verified certificate says about its holder.
type Peer struct {
	// Name is the certificate's common name: the identity an operator
	// issued, or "github:OWNER/NAME" for an OIDC-enrolled job.
	Name string
	// Repo is the repository of the wakegate://repo/ SAN, or "".
	Repo string
	// OIDC holds the CI job's claims when the certificate came from OIDC
	// enrolment; nil for certificates an operator issued.
	OIDC *Claims
}

// FromCert reads a peer from its leaf certificate.
func FromCert(leaf *x509.Certificate) Peer {
	p := Peer{Name: leaf.Subject.CommonName}
	for _, u := range leaf.URIs {
		s := u.String()
		switch {
		case strings.HasPrefix(s, RepoURIPrefix) && p.Repo == "":
			if r, err := url.PathUnescape(strings.TrimPrefix(u.EscapedPath(), "/")); err == nil {
				p.Repo = r
			}
		case u.Scheme == claimsScheme && u.Host == claimsHost && p.OIDC == nil:
			if c, ok := parseClaimsURI(u); ok {
				p.OIDC = &c
			}
		}
	}
	return p
}

// FromConn reads the peer of a completed handshake from the leaf of its
// first verified chain; ok is false when the peer was not verified.
func FromConn(cs tls.ConnectionState) (p Peer, ok bool) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Peer{}, false
	}
	return FromCert(cs.VerifiedChains[0][0]), true
}

// AffinityKey is what the gateway places a peer by: its repository
// ("repo:OWNER/NAME") when its certificate names one, else its name.
func (p Peer) AffinityKey() string {
	if p.Repo != "" {
		return "repo:" + p.Repo
	}
	return p.Name
}
