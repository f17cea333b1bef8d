package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"time"
)

// Pool is a cert pool holding only the CA's root: leaves present their
// intermediate themselves.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root)
	return p
}

// ServerTLS is the TLS profile every wakegate server uses: TLS 1.3 only and a
// client certificate that chains to roots, required. The certificate comes
// from cert on every handshake so a renewer can swap it.
func ServerTLS(cert func() *tls.Certificate, roots *x509.CertPool, protos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  roots,
		NextProtos: protos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cert(), nil
		},
	}
}

// ClientTLS is the client side of the same profile: the server must chain to
// roots and match serverName.
func ClientTLS(cert func() *tls.Certificate, roots *x509.CertPool, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert(), nil
		},
	}
}

// LoadClientCreds reads what WriteClientCreds wrote: the client's certificate
// chain and key, and a pool of the CA root it trusts.
func LoadClientCreds(dir string) (*tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, ClientCertFile), filepath.Join(dir, ClientKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("load client credentials from %s: %w (issue them with 'wakegate certs issue --out %s')", dir, err, dir)
	}
	if cert.Leaf != nil && time.Now().After(cert.Leaf.NotAfter) {
		return nil, nil, fmt.Errorf("load client credentials from %s: certificate for %q expired at %s; issue a new one with 'wakegate certs issue'", dir, cert.Leaf.Subject.CommonName, cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	roots, err := loadPool(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, nil, err
	}
	return &cert, roots, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	certs, err := readCerts(path)
	if err != nil {
		return nil, fmt.Errorf("load trusted roots: %w", err)
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p, nil
}

// LoadRoots reads the CA roots a credentials directory trusts (its
// CACertFile), for configurations that carry the trust bundle itself
// (Envoy's) rather than a pool.
func LoadRoots(dir string) ([]*x509.Certificate, error) {
	roots, err := readCerts(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("load trusted roots: %w", err)
	}
	return roots, nil
}
