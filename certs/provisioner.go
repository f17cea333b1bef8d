package certs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/smallstep/cli-utils/token"
	"github.com/smallstep/cli-utils/token/provision"
	"github.com/wakegate/wakegate/identity"
	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/randutil"
)

// Provisioner names: one authorizes client certificates (what CI jobs and
// operators get), the other the gateway's and engines' server certificates,
// so that a client token can never yield a server certificate.
const (
	clientsProvisioner = "wakegate-clients"
	serversProvisioner = "wakegate-servers"
	// operatorKey signs operator requests to a running gateway; see
	// CA.Admin.
	operatorKey = "wakegate-operator"
)

// tokenAudience is smallstep's audience accepted for sign and revoke
// requests whatever address the CA is served on, so tokens do not depend on
// how the operator reached the CA.
const tokenAudience = "step-certificate-authority"

// Token lifetimes: one-time bootstrap tokens are short-lived by default.
const (
	DefaultTokenTTL = 10 * time.Minute
	MaxTokenTTL     = 24 * time.Hour
)

// Provisioner is a smallstep JWK provisioner whose private key wakegate
// holds: it signs one-time tokens that the authority accepts.
type Provisioner struct {
	Name string
	jwk  *jose.JSONWebKey // private
}

func provisionerPath(dir, name string) string {
	return filepath.Join(dir, "secrets", name+".jwk")
}

func newProvisioner(dir, name string, password []byte) (*Provisioner, error) {
	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		return nil, fmt.Errorf("generate provisioner %s key: %w", name, err)
	}
	if jwk.KeyID, err = jose.Thumbprint(jwk); err != nil {
		return nil, fmt.Errorf("provisioner %s key id: %w", name, err)
	}
	var data []byte
	if password != nil {
		jwe, err := jose.EncryptJWK(jwk, password)
		if err != nil {
			return nil, fmt.Errorf("encrypt provisioner %s key: %w", name, err)
		}
		s, err := jwe.CompactSerialize()
		if err != nil {
			return nil, fmt.Errorf("encrypt provisioner %s key: %w", name, err)
		}
		data = []byte(s)
	} else if data, err = json.Marshal(jwk); err != nil {
		return nil, fmt.Errorf("encode provisioner %s key: %w", name, err)
	}
	if err := writeFile(provisionerPath(dir, name), data, 0o600); err != nil {
		return nil, err
	}
	return &Provisioner{Name: name, jwk: jwk}, nil
}

func loadProvisioner(dir, name string, password []byte) (*Provisioner, error) {
	path := provisionerPath(dir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load provisioner %s: %w", name, err)
	}
	if _, err := jose.ParseEncrypted(string(data)); err == nil && password == nil {
		return nil, fmt.Errorf("load provisioner %s: %w", name, ErrNeedPassword)
	}
	var opts []jose.Option
	if password != nil {
		opts = append(opts, jose.WithPassword(password))
	}
	jwk, err := jose.ParseKey(data, opts...)
	if err != nil {
		return nil, fmt.Errorf("load provisioner %s from %s: %w", name, path, err)
	}
	return &Provisioner{Name: name, jwk: jwk}, nil
}

// Public is the provisioner's public key, as the authority's configuration
// lists it.
func (p *Provisioner) Public() *jose.JSONWebKey {
	pub := p.jwk.Public()
	return &pub
}

// reservedNameMsg is why a client may not have a name of wakegate's own:
// engines would take it for the gateway. The clients provisioner's template
// says the same, for tokens not made here.
const reservedNameMsg = "names beginning " + identity.ReservedPrefix + " are reserved for the gateway and engines"

// ErrReservedName refuses a client a name (or SAN) of wakegate's own: a
// wakegate- name, or a wakegate://role/ mark.
var ErrReservedName = errors.New(reservedNameMsg)

// checkClientNames refuses a client certificate request whose subject or
// SANs claim to be one of wakegate's own certificates.
func checkClientNames(subject string, sans []string) error {
	if identity.Reserved(subject) {
		return fmt.Errorf("client %q: %w", subject, ErrReservedName)
	}
	for _, s := range sans {
		if identity.Reserved(s) || identity.IsRoleURI(s) {
			return fmt.Errorf("client %q: SAN %q: %w", subject, s, ErrReservedName)
		}
	}
	return nil
}

// Token signs a one-time token for subject: the authority accepts it once,
// before it expires, to sign a certificate for subject with sans (or, for
// revocation, subject is the serial number). The clients provisioner
// refuses wakegate's own names and role marks (ErrReservedName).
func (p *Provisioner) Token(subject string, sans []string, ttl time.Duration) (string, error) {
	if ttl <= 0 || ttl > MaxTokenTTL {
		return "", fmt.Errorf("token for %s: ttl %s must be positive and at most %s", subject, ttl, MaxTokenTTL)
	}
	if p.Name == clientsProvisioner {
		if err := checkClientNames(subject, sans); err != nil {
			return "", fmt.Errorf("token: %w", err)
		}
	}
	now := time.Now()
	return p.tokenFor(subject, sans, now, now.Add(ttl))
}

func (p *Provisioner) tokenFor(subject string, sans []string, notBefore, notAfter time.Time) (string, error) {
	if len(sans) == 0 {
		sans = []string{subject}
	}
	// A random id makes every token single-use in the authority's database.
	jti, err := randutil.Hex(64)
	if err != nil {
		return "", err
	}
	tok, err := provision.New(subject,
		token.WithJWTID(jti),
		token.WithKid(p.jwk.KeyID),
		token.WithIssuer(p.Name),
		token.WithAudience(tokenAudience),
		token.WithValidity(notBefore, notAfter),
		token.WithSANS(sans),
	)
	if err != nil {
		return "", fmt.Errorf("token for %s: %w", subject, err)
	}
	return tok.SignedString(p.jwk.Algorithm, p.jwk.Key)
}
