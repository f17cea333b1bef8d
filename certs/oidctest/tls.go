package oidctest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"time"
)

// trust is the process-wide test root and the one server certificate it
// signs. It is process-wide, not per issuer, because Go reads SSL_CERT_FILE
// once per process: a second root could never be trusted through it.
var trust struct {
	once sync.Once
	err  error
	file string            // PEM of the root
	root *x509.Certificate // the root itself
	leaf tls.Certificate   // for 127.0.0.1, ::1 and localhost
}

func loadTrust() error {
	trust.once.Do(func() { trust.err = makeTrust() })
	return trust.err
}

// TrustFile is the path of a PEM file holding the test root CA that every
// server of this package chains to, for SSL_CERT_FILE. The file is written
// once per process into os.TempDir() and left there: the process, not a
// test, owns it.
func TrustFile() string {
	if err := loadTrust(); err != nil {
		panic("oidctest: " + err.Error())
	}
	return trust.file
}

// TrustPool is a new pool holding only the test root CA, for
// tls.Config.RootCAs.
func TrustPool() *x509.CertPool {
	if err := loadTrust(); err != nil {
		panic("oidctest: " + err.Error())
	}
	p := x509.NewCertPool()
	p.AddCert(trust.root)
	return p
}

func makeTrust() error {
	// Valid from before 2000-01-01, where testing/synctest's clock starts,
	// so a client inside a bubble still accepts the chain.
	notBefore := time.Date(1999, 12, 1, 0, 0, 0, 0, time.UTC)
	notAfter := time.Now().AddDate(10, 0, 0)

	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate root key: %w", err)
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"wakegate oidctest"}, CommonName: "wakegate oidctest root CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return fmt.Errorf("create root certificate: %w", err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return fmt.Errorf("parse root certificate: %w", err)
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate server key: %w", err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"wakegate oidctest"}, CommonName: "localhost"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, root, &leafKey.PublicKey, rootKey)
	if err != nil {
		return fmt.Errorf("create server certificate: %w", err)
	}

	f, err := os.CreateTemp(os.TempDir(), "wakegate-oidctest-root-*.pem")
	if err != nil {
		return fmt.Errorf("write root PEM: %w", err)
	}
	werr := pem.Encode(f, &pem.Block{Type: "CERTIFICATE", Bytes: rootDER})
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write root PEM %s: %w", f.Name(), werr)
	}

	trust.file = f.Name()
	trust.root = root
	trust.leaf = tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey, Leaf: mustParse(leafDER)}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("oidctest: serial number: " + err.Error())
	}
	return n
}

func mustParse(der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic("oidctest: parse certificate: " + err.Error())
	}
	return c
}

// startTLS serves h over HTTPS on 127.0.0.1 with the test root's server
// certificate. The caller closes the server.
func startTLS(h http.Handler) (*httptest.Server, error) {
	if err := loadTrust(); err != nil {
		return nil, err
	}
	// Our own listener, not httptest's: that one may fall back to [::1]
	// or obey -httptest.serve, and URLs here promise 127.0.0.1.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on 127.0.0.1: %w", err)
	}
	srv := &httptest.Server{
		Listener: l,
		// Tests make handshakes fail on purpose (a client without the
		// test root); "TLS handshake error" lines would only be noise.
		Config: &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: 10 * time.Second},
		TLS:    &tls.Config{Certificates: []tls.Certificate{trust.leaf}, MinVersion: tls.VersionTLS12},
	}
	srv.StartTLS()
	return srv, nil
}
