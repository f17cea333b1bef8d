package engine

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/identity"
)

// rolePKI is a CA through the embedded authority, as the gateway runs it,
// plus a hand-made root for certificates the authority would never sign
// (to check the engine's front on its own).
type rolePKI struct {
	ca        *certs.CA
	gateway   *tls.Certificate // the gateway's, from the servers provisioner
	engine    *tls.Certificate // an engine's, from the servers provisioner
	roots     *x509.CertPool   // the CA's root and the hand-made one
	handRoot  *x509.Certificate
	handKey   *ecdsa.PrivateKey
	handNames int64
}

func newRolePKI(t *testing.T) *rolePKI {
	t.Helper()
	ca, err := certs.Init(t.TempDir(), "roles", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.OpenAuthority(certs.AuthorityConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	gw, err := a.Issue(t.Context(), certs.Server, identity.GatewayName, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := a.Issue(t.Context(), certs.Server, identity.EngineName("0"), []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &rolePKI{ca: ca, gateway: gw.TLSCertificate(), engine: eng.TLSCertificate(), roots: ca.Pool()}
	p.handKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hand-made root"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.handKey.PublicKey, p.handKey)
	if err != nil {
		t.Fatal(err)
	}
	if p.handRoot, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.roots.AddCert(p.handRoot)
	return p
}

// leaf signs, with the hand-made root, a certificate for name with the
// given usages and URI SANs.
func (p *rolePKI) leaf(t *testing.T, name string, eku []x509.ExtKeyUsage, uris ...string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.handNames++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(100 + p.handNames), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: eku,
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.handRoot, &key.PublicKey, p.handKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// admits reports the engine front's verdict on a client presenting cert:
// the server side of one handshake over loopback TCP.
func admits(t *testing.T, e *Engine, roots *x509.CertPool, cert *tls.Certificate) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	verdict := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			verdict <- err
			return
		}
		tc := tls.Server(c, e.tls)
		verdict <- tc.HandshakeContext(ctx)
		tc.Close()
	}()
	cfg := certs.ClientTLS(func() *tls.Certificate { return cert }, roots, "127.0.0.1")
	cfg.NextProtos = []string{ProtoStatus}
	if c, err := tls.Dial("tcp", ln.Addr().String(), cfg); err == nil {
		defer c.Close()
	}
	return <-verdict
}

func TestEngineAdmitsOnlyAGatewayCertificateNotAName(t *testing.T) {
	p := newRolePKI(t)
	e, err := New(Config{
		Backend: Buildkitd{Dir: t.TempDir()},
		TLS:     certs.ServerTLS(func() *tls.Certificate { return p.engine }, p.roots),
		Allow:   []string{identity.GatewayName},
	})
	if err != nil {
		t.Fatal(err)
	}
	// What 'certs issue --name wakegate-gateway' gave before names were
	// reserved: a client certificate with the gateway's name. The CA
	// refuses that name to clients now, so it is made by hand.
	named := p.leaf(t, identity.GatewayName, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	job, err := p.ca.Issue(certs.Client, "ci-job", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	role := identity.RoleURI(identity.RoleGateway)
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, tc := range []struct {
		name  string
		cert  *tls.Certificate
		admit bool
	}{
		{"the gateway's certificate", p.gateway, true},
		{"a client certificate named wakegate-gateway", named, false},
		{"a CI job's certificate", job.TLSCertificate(), false},
		{"an engine's certificate", p.engine, false},
		{"server and client usage without the role", p.leaf(t, identity.GatewayName, both), false},
		{"the role on a client-only certificate", p.leaf(t, identity.GatewayName, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, role), false},
		{"the role under a name not allowed", p.leaf(t, "other-gateway", both, role), false},
		{"the role with server usage, as issued", p.leaf(t, identity.GatewayName, both, role), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := admits(t, e, p.roots, tc.cert)
			if tc.admit && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.admit && err == nil {
				t.Fatal("admitted")
			}
		})
	}
}

// fakeEngine serves one TLS handshake at a time with the engine's
// certificate, requiring a client certificate, as an engine's port does.
func fakeEngine(t *testing.T, p *rolePKI) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", certs.ServerTLS(func() *tls.Certificate { return p.engine }, p.roots))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	return "tls://" + ln.Addr().String()
}

func TestGatewayRefusesARevokedEngine(t *testing.T) {
	p := newRolePKI(t)
	addr := fakeEngine(t, p)
	engineSerial := p.engine.Leaf.SerialNumber.String()
	lookupFailed := errors.New("database closed")
	for _, tc := range []struct {
		name    string
		revoked func(serial string) (bool, error)
		want    string // "" when the dial must succeed
	}{
		{"not revoked", func(string) (bool, error) { return false, nil }, ""},
		{"revoked", func(s string) (bool, error) { return s == engineSerial, nil }, "is revoked"},
		{"lookup fails", func(string) (bool, error) { return false, lookupFailed }, "database closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked []string
			c := &Client{
				TLS: certs.ClientTLS(func() *tls.Certificate { return p.gateway }, p.ca.Pool(), ""),
				IsRevoked: func(serial string) (bool, error) {
					asked = append(asked, serial)
					return tc.revoked(serial)
				},
			}
			conn, err := c.Dial(t.Context(), addr)
			if err == nil {
				conn.Close()
			}
			if len(asked) != 1 || asked[0] != engineSerial {
				t.Errorf("revocation asked about %v, want the engine's serial %s once", asked, engineSerial)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("dial: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("dial = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
