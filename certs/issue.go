package certs

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"
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

// Templates in smallstep's x509util template language. A client leaf only
// authenticates clients; a server leaf only serves.
const (
	clientTemplate = `{
	"subject": {{ toJson .Subject }},
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["clientAuth"]
}`
	serverTemplate = `{
	"subject": {{ toJson .Subject }},
	"sans": {{ toJson .SANs }},
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["serverAuth"]
}`
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
// database. sans applies to server certificates only.
func (ca *CA) Issue(kind Kind, name string, sans []string, ttl time.Duration) (*Leaf, error) {
	if name == "" {
		return nil, fmt.Errorf("issue certificate: a name is required")
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
	tmpl := clientTemplate
	data := x509util.CreateTemplateData(name, nil)
	if kind == Server {
		tmpl = serverTemplate
		data = x509util.CreateTemplateData(name, sans)
	}
	cert, err := signWithData(tmpl, data, key.Public(), ca.Intermediate, ca.signer, ttl)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", name, err)
	}
	return &Leaf{Cert: cert, Chain: []*x509.Certificate{cert, ca.Intermediate}, Key: key}, nil
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
