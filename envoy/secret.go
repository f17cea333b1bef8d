package envoy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// CertPEM is a certificate's chain and its private key in PEM, as Envoy
// reads them. The key is PKCS #8. Never log it.
func CertPEM(cert *tls.Certificate) (chain, key []byte, err error) {
	if cert == nil || len(cert.Certificate) == 0 || cert.PrivateKey == nil {
		return nil, nil, errors.New("no certificate and key")
	}
	var b bytes.Buffer
	for _, der := range cert.Certificate {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("encode private key: %w", err)
	}
	return b.Bytes(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// RootsPEM is the trust bundle in PEM.
func RootsPEM(roots []*x509.Certificate) ([]byte, error) {
	if len(roots) == 0 {
		return nil, errors.New("no CA root to trust")
	}
	var b bytes.Buffer
	for _, r := range roots {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})
	}
	return b.Bytes(), nil
}

// SecretResources are the secrets the ADS server serves: CertSecret (the
// certificate with its key) and TrustSecret (the trust bundle), inline.
func SecretResources(cert *tls.Certificate, roots []*x509.Certificate) ([]*tlsv3.Secret, error) {
	chain, key, err := CertPEM(cert)
	if err != nil {
		return nil, fmt.Errorf("envoy secret %s: %w", CertSecret, err)
	}
	bundle, err := RootsPEM(roots)
	if err != nil {
		return nil, fmt.Errorf("envoy secret %s: %w", TrustSecret, err)
	}
	out := []*tlsv3.Secret{
		{Name: CertSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chain),
			PrivateKey:       inline(key),
		}}},
		{Name: TrustSecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(bundle),
		}}},
	}
	for _, s := range out {
		if err := check("secret "+s.Name, s); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func inline(b []byte) *core.DataSource {
	return &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b}}
}

func file(path string) *core.DataSource {
	return &core.DataSource{Specifier: &core.DataSource_Filename{Filename: path}}
}
