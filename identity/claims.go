package identity

import (
	"net/url"
)

// Claims are what wakegate keeps of a CI job's OIDC token: enough to judge
// the job against a policy again at every handshake, long after the token
// itself expired. Field names follow GitHub Actions' claims.
type Claims struct {
	Issuer      string // iss
	Subject     string // sub, e.g. repo:acme/app:ref:refs/heads/main
	Repository  string // repository, OWNER/NAME
	Owner       string // repository_owner
	Ref         string // ref, e.g. refs/heads/main
	Workflow    string // workflow (its name)
	Environment string // environment, "" outside one
	EventName   string // event_name, e.g. push, pull_request
}

// The claims SAN: wakegate://oidc?iss=…&repository=…&… . A URI SAN rather
// than a private extension so that 'openssl x509 -text' shows it.
const (
	claimsScheme = "wakegate"
	claimsHost   = "oidc"
)

// fields pairs each claim with its query key (GitHub's claim names).
func (c *Claims) fields() []struct {
	key string
	val *string
} {
	return []struct {
		key string
		val *string
	}{
		{"iss", &c.Issuer}, {"sub", &c.Subject}, {"repository", &c.Repository},
		{"repository_owner", &c.Owner}, {"ref", &c.Ref}, {"workflow", &c.Workflow},
		{"environment", &c.Environment}, {"event_name", &c.EventName},
	}
}

// URI encodes the claims as the certificate's claims SAN.
func (c Claims) URI() string {
	q := url.Values{}
	for _, f := range c.fields() {
		if *f.val != "" {
			q.Set(f.key, *f.val)
		}
	}
	return (&url.URL{Scheme: claimsScheme, Host: claimsHost, RawQuery: q.Encode()}).String()
}

func parseClaimsURI(u *url.URL) (Claims, bool) {
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Claims{}, false
	}
	var c Claims
	for _, f := range c.fields() {
		*f.val = q.Get(f.key)
	}
	return c, c.Repository != ""
}
