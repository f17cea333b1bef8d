package certs_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

func intermediates(ca *certs.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Intermediate)
	return p
}

func TestIssueClientLeafOnlyAuthenticatesClients(t *testing.T) {
	ca := newCA(t, "Test")
	before := time.Now()
	leaf, err := ca.Issue(certs.Client, "ci-job-1", []string{"ignored.example"}, 2*time.Hour)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	c := leaf.Cert
	if c.Subject.CommonName != "ci-job-1" {
		t.Errorf("CN = %q, want ci-job-1", c.Subject.CommonName)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage = %v, want only ClientAuth", c.ExtKeyUsage)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want DigitalSignature only", c.KeyUsage)
	}
	if c.IsCA {
		t.Errorf("client leaf is a CA")
	}
	if !slices.Equal(c.DNSNames, []string{"ci-job-1"}) || len(c.IPAddresses)+len(c.URIs) != 0 {
		t.Errorf("client leaf has SANs %v %v %v; a client names itself (and its repository) only", c.DNSNames, c.IPAddresses, c.URIs)
	}
	if c.NotAfter.Before(before.Add(2*time.Hour-time.Minute)) || c.NotAfter.After(time.Now().Add(2*time.Hour)) {
		t.Errorf("NotAfter = %v, want about 2h from now", c.NotAfter)
	}
	if !c.NotBefore.Before(before) {
		t.Errorf("NotBefore = %v is not backdated before %v", c.NotBefore, before)
	}
	if len(leaf.Chain) != 2 || !leaf.Chain[0].Equal(c) || !leaf.Chain[1].Equal(ca.Intermediate) {
		t.Errorf("Chain is not [leaf, intermediate]")
	}
	if _, err := c.Verify(x509.VerifyOptions{
		Roots: ca.Pool(), Intermediates: intermediates(ca),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Errorf("client leaf does not verify for client auth: %v", err)
	}
	if _, err := c.Verify(x509.VerifyOptions{
		Roots: ca.Pool(), Intermediates: intermediates(ca),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err == nil {
		t.Errorf("client leaf verifies for server auth")
	}
	if !leaf.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) {
		t.Errorf("Key does not match the certificate's public key")
	}
}

func TestIssueServerLeafServesItsSANs(t *testing.T) {
	ca := newCA(t, "Test")
	leaf, err := ca.Issue(certs.Server, "localhost", []string{"127.0.0.1", "localhost", "gw.example"}, time.Hour)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	c := leaf.Cert
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("ExtKeyUsage = %v, want only ServerAuth", c.ExtKeyUsage)
	}
	if c.IsCA {
		t.Errorf("server leaf is a CA")
	}
	if !slices.Contains(c.DNSNames, "localhost") || !slices.Contains(c.DNSNames, "gw.example") {
		t.Errorf("DNSNames = %v, want localhost and gw.example", c.DNSNames)
	}
	if !slices.ContainsFunc(c.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP("127.0.0.1")) }) {
		t.Errorf("IPAddresses = %v, want 127.0.0.1", c.IPAddresses)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "gw.example"} {
		if _, err := c.Verify(x509.VerifyOptions{
			Roots: ca.Pool(), Intermediates: intermediates(ca), DNSName: host,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			t.Errorf("server leaf does not verify for %s: %v", host, err)
		}
	}
	if err := c.VerifyHostname("other.example"); err == nil {
		t.Errorf("server leaf matches a host it was not issued for")
	}
	if _, err := c.Verify(x509.VerifyOptions{
		Roots: ca.Pool(), Intermediates: intermediates(ca),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err == nil {
		t.Errorf("server leaf verifies for client auth")
	}
}

func TestIssuedLeafDoesNotVerifyWithoutIntermediate(t *testing.T) {
	// The pool holds only the root, so the chain the leaf carries matters.
	ca := newCA(t, "Test")
	leaf, err := ca.Issue(certs.Client, "c", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Fatalf("leaf verified against the root alone; the pool should not hold the intermediate")
	}
	tc := leaf.TLSCertificate()
	if len(tc.Certificate) != 2 {
		t.Fatalf("TLSCertificate carries %d certificates, want leaf and intermediate", len(tc.Certificate))
	}
	inter, err := x509.ParseCertificate(tc.Certificate[1])
	if err != nil || !inter.Equal(ca.Intermediate) {
		t.Fatalf("TLSCertificate's second certificate is not the intermediate (%v)", err)
	}
	if tc.Leaf != leaf.Cert || tc.PrivateKey != leaf.Key {
		t.Fatalf("TLSCertificate does not carry the leaf and its key")
	}
}

func TestIssueRefusesBadRequests(t *testing.T) {
	ca := newCA(t, "Test")
	tests := []struct {
		name    string
		kind    certs.Kind
		cn      string
		ttl     time.Duration
		wantErr string
	}{
		{"no name", certs.Client, "", time.Hour, "name is required"},
		{"zero ttl", certs.Client, "c", 0, "shorter than the minimum"},
		{"ttl below a minute", certs.Server, "s", 59 * time.Second, "shorter than the minimum"},
		{"negative ttl", certs.Server, "s", -time.Hour, "shorter than the minimum"},
		{"client ttl above 24h", certs.Client, "c", certs.MaxClientTTL + time.Second, "longer than the maximum"},
		{"ttl outliving the intermediate", certs.Server, "s", 20 * 365 * 24 * time.Hour, "outlives the intermediate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf, err := ca.Issue(tt.kind, tt.cn, nil, tt.ttl)
			if err == nil {
				t.Fatalf("Issue succeeded: %v until %v", leaf.Cert.Subject, leaf.Cert.NotAfter)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestIssueAcceptsTTLBounds(t *testing.T) {
	ca := newCA(t, "Test")
	tests := []struct {
		name string
		kind certs.Kind
		ttl  time.Duration
	}{
		{"one minute", certs.Client, time.Minute},
		{"client maximum", certs.Client, certs.MaxClientTTL},
		{"server beyond the client maximum", certs.Server, 30 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ca.Issue(tt.kind, "x", []string{"x"}, tt.ttl); err != nil {
				t.Fatalf("Issue(%v): %v", tt.ttl, err)
			}
		})
	}
}

func TestWriteClientCredsRoundTripsThroughLoadClientCreds(t *testing.T) {
	ca := newCA(t, "Test")
	leaf, err := ca.Issue(certs.Client, "ci-job-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "creds", "nested")
	if err := ca.WriteClientCreds(dir, leaf); err != nil {
		t.Fatalf("WriteClientCreds: %v", err)
	}
	if got := mode(t, filepath.Join(dir, certs.ClientKeyFile)); got != 0o600 {
		t.Errorf("%s has mode %v, want 0600", certs.ClientKeyFile, got)
	}
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("credentials dir has mode %v, want 0700", got)
	}

	cert, roots, err := certs.LoadClientCreds(dir)
	if err != nil {
		t.Fatalf("LoadClientCreds: %v", err)
	}
	if cert.Leaf == nil || !cert.Leaf.Equal(leaf.Cert) {
		t.Fatalf("loaded leaf is not the issued one")
	}
	if len(cert.Certificate) != 2 {
		t.Fatalf("loaded chain has %d certificates, want leaf and intermediate", len(cert.Certificate))
	}
	inter := x509.NewCertPool()
	for _, raw := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("loaded chain does not verify against the loaded roots: %v", err)
	}
	if !roots.Equal(ca.Pool()) {
		t.Fatalf("loaded roots are not exactly the CA root")
	}
	pub := cert.PrivateKey.(crypto.Signer).Public()
	if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.Cert.PublicKey) {
		t.Fatalf("loaded key does not match the certificate")
	}
}

func TestLoadClientCredsOfMissingDirSaysHowToIssue(t *testing.T) {
	_, _, err := certs.LoadClientCreds(filepath.Join(t.TempDir(), "none"))
	if err == nil {
		t.Fatal("LoadClientCreds of a missing directory succeeded")
	}
	if !strings.Contains(err.Error(), "wakegate certs issue") {
		t.Fatalf("error %q does not say how to get credentials", err)
	}
}

func TestLoadClientCredsRefusesExpiredCertificate(t *testing.T) {
	// Issue cannot make an expired certificate, so build one by hand.
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Throwaway Root"},
		NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "old-job"},
		NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, root, &leafKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, block := range map[string]*pem.Block{
		certs.ClientCertFile: {Type: "CERTIFICATE", Bytes: leafDER},
		certs.ClientKeyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
		certs.CACertFile:     {Type: "CERTIFICATE", Bytes: rootDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	cert, _, err := certs.LoadClientCreds(dir)
	if err == nil {
		t.Fatalf("LoadClientCreds accepted a certificate that expired at %v", cert.Leaf.NotAfter)
	}
	if !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "old-job") {
		t.Fatalf("error %q does not say which certificate expired", err)
	}
}
