package certs

import (
	"crypto/x509"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/certificates/ca"
)

// servedAuthority opens the embedded authority on a fresh CA and serves its
// API on loopback TLS, as the gateway does.
func servedAuthority(t *testing.T, password []byte) (*Authority, string) {
	t.Helper()
	c, err := Init(t.TempDir(), "test", password)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.OpenAuthority(AuthorityConfig{Address: ln.Addr().String(), DNSNames: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := a.Issue(t.Context(), Server, "ca", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: a.Handler(), TLSConfig: a.ServerTLS(leaf.TLSCertificate)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
		a.Close()
	})
	return a, "https://" + ln.Addr().String()
}

func TestSmallstepClientBootstrapsWithAOneTimeToken(t *testing.T) {
	a, url := servedAuthority(t, []byte("correct horse"))
	client, err := ca.NewClient(url, ca.WithRootSHA256(a.CA().Fingerprint()))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.CA().Clients.Token("ci-runner", nil, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req, _, err := ca.CreateSignRequest(tok)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Sign(req)
	if err != nil {
		t.Fatalf("sign with a fresh token: %v", err)
	}
	cert := resp.ServerPEM.Certificate
	if cert.Subject.CommonName != "ci-runner" {
		t.Fatalf("issued for %q, want ci-runner", cert.Subject.CommonName)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("client certificate has ext key usages %v, want client auth only", cert.ExtKeyUsage)
	}
	inter := x509.NewCertPool()
	inter.AddCert(resp.CaPEM.Certificate)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: a.CA().Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("issued certificate does not verify against the root: %v", err)
	}

	// The same token a second time is refused.
	again, _, err := ca.CreateSignRequest(tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Sign(again); err == nil || !strings.Contains(err.Error(), "authorization") {
		t.Fatalf("reusing a token = %v, want an authorization refusal", err)
	}
}

func TestExpiredTokenIsRefused(t *testing.T) {
	a, url := servedAuthority(t, nil)
	client, err := ca.NewClient(url, ca.WithRootSHA256(a.CA().Fingerprint()))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.CA().Clients.tokenFor("ci", nil, time.Now().Add(-time.Hour), time.Now().Add(-10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	req, _, err := ca.CreateSignRequest(tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Sign(req); err == nil {
		t.Fatal("an expired token was accepted")
	}
}

func TestWrongFingerprintIsRefusedBeforeAnyRequest(t *testing.T) {
	other, err := Init(t.TempDir(), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, url := servedAuthority(t, nil)
	client, err := ca.NewClient(url, ca.WithRootSHA256(other.Fingerprint()))
	if err == nil {
		_, err = client.Version()
	}
	if err == nil || !strings.Contains(err.Error(), other.Fingerprint()) {
		t.Fatalf("a CA whose root does not match the fingerprint = %v, want a refusal naming the fingerprint", err)
	}
}

func TestServerTokensCannotBeUsedForClientsProvisionerAndViceVersa(t *testing.T) {
	a, _ := servedAuthority(t, nil)
	leaf, err := a.Issue(t.Context(), Server, "gw", []string{"gw.example", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !hasEKU(leaf.Cert, x509.ExtKeyUsageServerAuth) {
		t.Fatalf("server leaf lacks server auth: %v", leaf.Cert.ExtKeyUsage)
	}
	client, err := a.Issue(t.Context(), Client, "ci", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if hasEKU(client.Cert, x509.ExtKeyUsageServerAuth) {
		t.Fatal("a client certificate can serve")
	}
	// A client certificate longer than the clients' maximum is refused.
	if _, err := a.Issue(t.Context(), Client, "ci", nil, 48*time.Hour); err == nil {
		t.Fatal("a 48h client certificate was issued")
	}
}

func hasEKU(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	for _, u := range c.ExtKeyUsage {
		if u == want {
			return true
		}
	}
	return false
}

func TestEncryptedCANeedsItsPassword(t *testing.T) {
	c, err := Init(t.TempDir(), "enc", []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(c.Dir, nil); err == nil || !strings.Contains(err.Error(), "WAKEGATE_CA_PASSWORD") {
		t.Fatalf("Load without the password = %v, want an error naming WAKEGATE_CA_PASSWORD", err)
	}
	if _, err := Load(c.Dir, []byte("wrong")); err == nil {
		t.Fatal("Load with a wrong password succeeded")
	}
	if _, err := Load(c.Dir, []byte("s3cret")); err != nil {
		t.Fatalf("Load with the password: %v", err)
	}
}
