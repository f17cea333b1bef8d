package certs

import (
	"crypto/tls"
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

// AffinityKey is what the gateway places a verified client by: its
// repository ("repo:OWNER/NAME") when its certificate names one, else its
// identity.
func AffinityKey(cs tls.ConnectionState) string {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ""
	}
	leaf := cs.VerifiedChains[0][0]
	for _, u := range leaf.URIs {
		if s := u.String(); strings.HasPrefix(s, RepoURIPrefix) {
			if p, err := url.PathUnescape(strings.TrimPrefix(u.EscapedPath(), "/")); err == nil && p != "" {
				return "repo:" + p
			}
		}
	}
	return leaf.Subject.CommonName
}
