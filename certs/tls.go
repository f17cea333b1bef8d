package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
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

// sessionCacheSize is how many servers' session tickets a client keeps: one
// per gateway name for connect, one per engine address for the gateway.
const sessionCacheSize = 256

// ServerTLS is the TLS profile every wakegate server uses: TLS 1.3 only and a
// client certificate that chains to roots, required. The certificate comes
// from cert on every handshake so a renewer can swap it.
//
// It issues TLS 1.3 session tickets, so a client's next connection
// resumes without either side signing or verifying a certificate again: a
// CI job opens many short connections. A ticket is a 16-byte handle to a
// state this config keeps (tickets.go says why and how long). A resumed
// session carries the client certificate of its first handshake, restored
// from that state; crypto/tls re-verifies its
// chain and expiry against this config before it accepts the ticket, and
// calls VerifyConnection (RefuseRevoked) with PeerCertificates and
// VerifiedChains restored, so revocation and the gateway's policy are
// judged again at every handshake, resumed or not.
func ServerTLS(cert func() *tls.Certificate, roots *x509.CertPool, protos ...string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  roots,
		NextProtos: protos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cert(), nil
		},
	}
	newTicketStore().serve(cfg)
	return cfg
}

// ClientTLS is the client side of the same profile: the server must chain to
// roots and match serverName. It keeps the servers' session tickets, so that
// connections after the first resume; clones of it share them.
func ClientTLS(cert func() *tls.Certificate, roots *x509.CertPool, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		RootCAs:            roots,
		ServerName:         serverName,
		ClientSessionCache: certSessions{tls.NewLRUClientSessionCache(sessionCacheSize), cert},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert(), nil
		},
	}
}

// certSessions keys a client's sessions by its current certificate as well
// as by server: a resumed session presents the certificate of the handshake
// that made it, so after a renewal the next connection makes a full
// handshake with the new certificate, and a certificate replaced (and
// perhaps revoked since) is never presented again through an old ticket.
type certSessions struct {
	cache tls.ClientSessionCache
	cert  func() *tls.Certificate
}

func (s certSessions) key(server string) string {
	c := s.cert()
	switch {
	case c == nil || len(c.Certificate) == 0:
		return server
	case c.Leaf != nil:
		return server + "\x00" + c.Leaf.SerialNumber.Text(16)
	}
	sum := sha256.Sum256(c.Certificate[0])
	return server + "\x00" + hex.EncodeToString(sum[:16])
}

func (s certSessions) Get(server string) (*tls.ClientSessionState, bool) {
	return s.cache.Get(s.key(server))
}

func (s certSessions) Put(server string, cs *tls.ClientSessionState) {
	s.cache.Put(s.key(server), cs)
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
