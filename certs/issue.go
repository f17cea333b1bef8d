package certs

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"

	"github.com/wakegate/wakegate/identity"
)

// Kind says what a leaf certificate is for.
type Kind int

const (
	// Client certificates identify a client (a CI job) to the gateway.
	Client Kind = iota
	// Server certificates identify the gateway or an engine to its clients.
	Server
)

// Leaf lifetimes. Clients get short lives; servers renew themselves.
const (
	DefaultClientTTL = time.Hour
	MaxClientTTL     = 24 * time.Hour
	ServerTTL        = 24 * time.Hour
	minTTL           = time.Minute
)

// Credentials file names written by WriteClientCreds and read by LoadClientCreds.
const (
	ClientCertFile = "client.crt"
	ClientKeyFile  = "client.key"
	CACertFile     = "ca.crt"
)

// Leaf is an issued certificate with its new private key.
type Leaf struct {
	Cert  *x509.Certificate
	Chain []*x509.Certificate // Cert followed by the intermediate
	Key   crypto.Signer
}

// Issue creates a key and a certificate for name, signed directly by the
// intermediate: no authority, no token, no database record. wakegate's own
// commands issue through the Authority (Authority.Issue, Operator.Issue);
// this offline path serves tests and tools that must not touch the
// database. It applies the provisioners' own profiles (leafSANs, then the
// template of kind), so that what it issues is what production issues: a
// client names itself and its repository only, and may not take a name of
// wakegate's own; the gateway's certificate carries its role.
func (ca *CA) Issue(kind Kind, name string, sans []string, ttl time.Duration) (*Leaf, error) {
	sans, err := leafSANs(kind, name, sans)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	if ttl < minTTL {
		return nil, fmt.Errorf("issue certificate for %s: ttl %s is shorter than the minimum %s", name, ttl, minTTL)
	}
	if kind == Client && ttl > MaxClientTTL {
		return nil, fmt.Errorf("issue certificate for %s: ttl %s is longer than the maximum %s for clients", name, ttl, MaxClientTTL)
	}
	if ttl > time.Until(ca.Intermediate.NotAfter) {
		return nil, fmt.Errorf("issue certificate for %s: ttl %s outlives the intermediate CA (expires %s)", name, ttl, ca.Intermediate.NotAfter.Format(time.RFC3339))
	}
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: generate key: %w", name, err)
	}
	cert, err := signWithData(leafTemplate(kind), x509util.CreateTemplateData(name, sans), key.Public(), ca.Intermediate, ca.signer, ttl)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", name, err)
	}
	return &Leaf{Cert: cert, Chain: []*x509.Certificate{cert, ca.Intermediate}, Key: key}, nil
}

// leafSANs is what a leaf of kind for name may name, as both issuing paths
// ask for it: a client its name and the repository it builds (a RepoURI),
// nothing else, and never a name of wakegate's own (ErrReservedName); a
// server the sans asked for (its name when none), and the gateway its role
// mark too.
func leafSANs(kind Kind, name string, sans []string) ([]string, error) {
	if name == "" {
		return nil, fmt.Errorf("a name is required")
	}
	if kind != Server {
		if err := checkClientNames(name, nil); err != nil {
			return nil, err
		}
		var repo []string
		for _, s := range sans {
			if strings.HasPrefix(s, identity.RepoURIPrefix) {
				repo = append(repo, s)
			}
		}
		return append([]string{name}, repo...), nil
	}
	if len(sans) == 0 {
		sans = []string{name}
	}
	if name == identity.GatewayName && !slices.Contains(sans, gatewayRoleURI) {
		sans = append(slices.Clone(sans), gatewayRoleURI)
	}
	return sans, nil
}

// leafTemplate is the template the provisioner of kind applies.
func leafTemplate(kind Kind) string {
	if kind == Server {
		return serverLeafTemplate
	}
	return clientLeafTemplate
}

// TLSCertificate is the leaf as crypto/tls wants it, chain included so that
// peers need only the root.
func (l *Leaf) TLSCertificate() *tls.Certificate {
	c := &tls.Certificate{PrivateKey: l.Key, Leaf: l.Cert}
	for _, x := range l.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// WriteClientCreds writes client.crt (leaf and intermediate), client.key
// (0600) and ca.crt (the root) into dir.
func (ca *CA) WriteClientCreds(dir string, l *Leaf) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write credentials to %s: %w", dir, err)
	}
	if err := writeKey(filepath.Join(dir, ClientKeyFile), l.Key, nil); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, ClientCertFile), encodeCerts(l.Chain...), 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, CACertFile), encodeCerts(ca.Root), 0o644)
}
