package certs

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"github.com/wakegate/wakegate/identity"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/certificates/ca"
	"go.step.sm/crypto/keyutil"
)

// servedAuthority opens the embedded authority on a fresh CA and serves its
// API on loopback TLS, as the gateway does.
func servedAuthority(t *testing.T, password []byte) (*Authority, string) {
	t.Helper()
	a, addr := servedAPIWith(t, password, APILimits{})
	return a, "https://" + addr
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

func TestIntermediateRotationKeepsOldCertificatesValid(t *testing.T) {
	pw := []byte("pw")
	c, err := Init(t.TempDir(), "rot", pw)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.OpenAuthority(AuthorityConfig{})
	if err != nil {
		t.Fatal(err)
	}
	before, err := a.Issue(t.Context(), Client, "old-client", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()

	rotated, err := RotateIntermediate(c.Dir, "rot", pw)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Intermediate.Equal(c.Intermediate) {
		t.Fatal("the intermediate did not change")
	}
	if !rotated.Root.Equal(c.Root) {
		t.Fatal("rotating the intermediate changed the root")
	}
	a, err = rotated.OpenAuthority(AuthorityConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	after, err := a.Issue(t.Context(), Server, "new-server", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := after.Cert.CheckSignatureFrom(rotated.Intermediate); err != nil {
		t.Fatalf("new certificate not signed by the new intermediate: %v", err)
	}

	// The old client still completes an mTLS handshake with a server whose
	// certificate comes from the new intermediate: both chain to the root.
	srv, cli := net.Pipe()
	defer srv.Close()
	defer cli.Close()
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(srv, ServerTLS(after.TLSCertificate, rotated.Pool()))
		errc <- s.HandshakeContext(t.Context())
	}()
	ccfg := ClientTLS(before.TLSCertificate, rotated.Pool(), "127.0.0.1")
	// No session ticket: over net.Pipe nothing buffers the one the server
	// would send after the handshake, and this client reads nothing.
	ccfg.ClientSessionCache = nil
	cc := tls.Client(cli, ccfg)
	if err := cc.HandshakeContext(t.Context()); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("a certificate from the old intermediate was refused after rotation: %v", err)
	}

	// And it renews, now under the new intermediate.
	chain, err := a.Renew(t.Context(), before.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := chain[0].CheckSignatureFrom(rotated.Intermediate); err != nil {
		t.Fatalf("renewed certificate not signed by the new intermediate: %v", err)
	}
}

func TestEnrollRefusesAnExpiredTokenBeforeAnyRequest(t *testing.T) {
	c, err := Init(t.TempDir(), "t", nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Clients.tokenFor("ci", nil, time.Now().Add(-time.Hour), time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	// No CA listens at this address: the expiry is caught first.
	_, err = Enroll(t.Context(), "https://127.0.0.1:1", c.Fingerprint(), tok, 0)
	if err == nil || !strings.Contains(err.Error(), "token expired at") {
		t.Fatalf("Enroll with an expired token = %v, want a clear expiry error", err)
	}
}

func TestGatewayProfileRefusesExpiredAndRevokedClients(t *testing.T) {
	c, err := Init(t.TempDir(), "t", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.OpenAuthority(AuthorityConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	server, err := a.Issue(t.Context(), Server, "gw", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	good, err := a.Issue(t.Context(), Client, "good", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := a.Issue(t.Context(), Client, "gone", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(t.Context(), revoked.Cert.SerialNumber.String(), "test"); err != nil {
		t.Fatal(err)
	}
	// An expired client certificate, signed by the real intermediate.
	expired, err := signExpiredClient(c, "late")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		want string // "" accepts
	}{
		{"valid", good.TLSCertificate(), ""},
		{"revoked", revoked.TLSCertificate(), "is revoked"},
		{"expired", expired, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli := net.Pipe()
			defer srv.Close()
			defer cli.Close()
			errc := make(chan error, 1)
			go func() {
				cfg := RefuseRevoked(ServerTLS(server.TLSCertificate, c.Pool()), a.IsRevoked)
				s := tls.Server(srv, cfg)
				err := s.HandshakeContext(t.Context())
				s.Close()
				errc <- err
			}()
			cc := tls.Client(cli, ClientTLS(func() *tls.Certificate { return tc.cert }, c.Pool(), "127.0.0.1"))
			cc.HandshakeContext(t.Context())
			cc.Read(make([]byte, 1)) // TLS 1.3: the server's verdict arrives after the client's handshake
			cc.Close()
			err := <-errc
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid client refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("server handshake = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func signExpiredClient(c *CA, name string) (*tls.Certificate, error) {
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     time.Now().Add(-time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Intermediate, key.Public(), c.signer)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, c.Intermediate.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

func TestRevocationPollerSeesARevocationWithinItsInterval(t *testing.T) {
	a, url := servedAuthority(t, nil)
	leaf, err := a.Issue(t.Context(), Server, "wakegate-gateway", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serial := leaf.Cert.SerialNumber.String()
	p := NewRevocationPoller(url, a.CA().Pool(), 100*time.Millisecond, nil)
	if _, err := p.IsRevoked(serial); err == nil {
		t.Fatal("a poller with no list yet did not refuse")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(5 * time.Second)
	for {
		revoked, err := p.IsRevoked(serial)
		if err == nil && !revoked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("poller never fetched a list: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	if err := a.Revoke(t.Context(), serial, "test"); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	for {
		if revoked, _ := p.IsRevoked(serial); revoked {
			break
		}
		if time.Since(revokedAt) > 5*time.Second {
			t.Fatal("the poller did not see the revocation within 5s")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

func TestRepositoryInTheCertificateIsTheAffinityKey(t *testing.T) {
	a, url := servedAuthority(t, nil)
	server, err := a.Issue(t.Context(), Server, "gw", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Issued by the operator, and enrolled with a token by smallstep's client.
	issued, err := a.Issue(t.Context(), Client, "job-1", []string{identity.RepoURI("acme/app"), "evil.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.CA().Clients.Token("job-2", []string{"job-2", identity.RepoURI("acme/app")}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Enroll(t.Context(), url, a.CA().Fingerprint(), tok, 0)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := a.Issue(t.Context(), Client, "job-3", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cert *tls.Certificate
		want string
	}{
		{issued.TLSCertificate(), "repo:acme/app"},
		{e.Cert, "repo:acme/app"},
		{plain.TLSCertificate(), "job-3"},
	} {
		srv, cli := net.Pipe()
		got := make(chan string, 1)
		go func() {
			s := tls.Server(srv, ServerTLS(server.TLSCertificate, a.CA().Pool()))
			if err := s.HandshakeContext(t.Context()); err != nil {
				got <- "handshake: " + err.Error()
				return
			}
			p, _ := identity.FromConn(s.ConnectionState())
			got <- p.AffinityKey()
		}()
		ccfg := ClientTLS(func() *tls.Certificate { return tc.cert }, a.CA().Pool(), "127.0.0.1")
		ccfg.ClientSessionCache = nil // over net.Pipe the server's ticket would wait for a read
		c := tls.Client(cli, ccfg)
		c.HandshakeContext(t.Context())
		if k := <-got; k != tc.want {
			t.Errorf("affinity key %q, want %q", k, tc.want)
		}
		srv.Close()
		cli.Close()
	}
	for _, n := range issued.Cert.DNSNames {
		if n == "evil.example" {
			t.Fatal("a client certificate carried a DNS name it was not issued for")
		}
	}
}
