package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"

	"github.com/wakegate/wakegate/identity"
)

// roleAuthority opens the embedded authority on a fresh CA, unserved: the
// provisioners' templates are what is under test.
func roleAuthority(t *testing.T) *Authority {
	t.Helper()
	c, err := Init(t.TempDir(), "roles", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.OpenAuthority(AuthorityConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// signRaw has the authority sign a request for subject and sans with a
// token made without Token's checks, as a token from another tool holding
// the provisioner's key would be.
func signRaw(t *testing.T, a *Authority, p *Provisioner, subject string, sans []string) (*x509.Certificate, error) {
	t.Helper()
	now := time.Now()
	tok, err := p.tokenFor(subject, sans, now, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509util.CreateCertificateRequest(subject, sans, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.Sign(t.Context(), csr, tok, time.Hour)
	if err != nil {
		return nil, err
	}
	return chain[0], nil
}

func TestClientsCannotTakeTheGatewaysOrEnginesNames(t *testing.T) {
	a := roleAuthority(t)
	clients := a.CA().Clients
	role := identity.RoleURI(identity.RoleGateway)

	for _, tc := range []struct {
		name, subject string
		sans          []string
	}{
		{"the gateway's name", "wakegate-gateway", nil},
		{"an engine's name", "wakegate-engine-0", nil},
		{"the gateway role", "team-a", []string{"team-a", role}},
		{"a reserved SAN", "team-a", []string{"team-a", "wakegate-gateway"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := clients.Token(tc.subject, tc.sans, time.Minute); !errors.Is(err, ErrReservedName) {
				t.Errorf("clients token = %v, want ErrReservedName", err)
			}
			// A token signed elsewhere with the provisioner's key is refused
			// by the provisioner's template.
			cert, err := signRaw(t, a, clients, tc.subject, tc.sans)
			if err == nil {
				t.Fatalf("the clients provisioner signed %q with %v", cert.Subject.CommonName, cert.URIs)
			}
			if !strings.Contains(err.Error(), "reserved for the gateway and engines") {
				t.Errorf("sign error %q does not say the name is reserved", err)
			}
		})
	}

	_, err := a.Issue(t.Context(), Client, "wakegate-gateway", nil, time.Hour)
	if !errors.Is(err, ErrReservedName) || !strings.Contains(err.Error(), "names beginning wakegate- are reserved for the gateway and engines") {
		t.Errorf("issue a client certificate named wakegate-gateway = %v, want the reserved-name refusal", err)
	}
	// Other names still work, and a client can never carry a role.
	leaf, err := a.Issue(t.Context(), Client, "team-a", []string{role}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r := identity.Role(leaf.Cert); r != "" {
		t.Errorf("client certificate has role %q", r)
	}
	// Revocation tokens (the subject is a serial) are unaffected.
	if _, err := clients.Token("123456789", nil, time.Minute); err != nil {
		t.Errorf("revocation token: %v", err)
	}
}

func TestEachRoleCertificateCarriesOnlyItsOwnUsage(t *testing.T) {
	a := roleAuthority(t)
	servers := a.CA().Servers
	serverOnly := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}

	gw, err := a.Issue(t.Context(), Server, identity.GatewayName, []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := signRaw(t, a, servers, "wakegate-engine-0", []string{"wakegate-engine-0", "e1.vm.app.internal"})
	if err != nil {
		t.Fatal(err)
	}
	caAPI, err := a.Issue(t.Context(), Server, "ca-api", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client, err := a.Issue(t.Context(), Client, "team-a", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		eku  []x509.ExtKeyUsage
		role string
	}{
		{"gateway", gw.Cert, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, identity.RoleGateway},
		{"engine", engine, serverOnly, ""},
		{"CA API", caAPI.Cert, serverOnly, ""},
		{"client", client.Cert, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, ""},
	} {
		if !slices.Equal(tc.cert.ExtKeyUsage, tc.eku) {
			t.Errorf("%s certificate has ext key usages %v, want %v", tc.name, tc.cert.ExtKeyUsage, tc.eku)
		}
		if r := identity.Role(tc.cert); r != tc.role {
			t.Errorf("%s certificate has role %q, want %q", tc.name, r, tc.role)
		}
	}
	if !slices.Equal(engine.DNSNames, []string{"wakegate-engine-0", "e1.vm.app.internal"}) || len(engine.IPAddresses) != 0 {
		t.Errorf("engine certificate names %v %v, want only what its token named", engine.DNSNames, engine.IPAddresses)
	}

	// The servers provisioner gives the gateway role to the gateway's name
	// only, and knows no other role.
	if c, err := signRaw(t, a, servers, "wakegate-engine-0", []string{"wakegate-engine-0", identity.RoleURI(identity.RoleGateway)}); err == nil {
		t.Errorf("an engine certificate with the gateway role was signed: %v", c.URIs)
	}
	if c, err := signRaw(t, a, servers, identity.GatewayName, []string{identity.GatewayName, identity.RoleURI("admin")}); err == nil {
		t.Errorf("a certificate with an unknown role was signed: %v", c.URIs)
	}
}

// TestGatewayPortRefusesAnEngineCertificateAsAClient: an engine's
// certificate may serve, not authenticate to the gateway.
func TestGatewayPortRefusesAnEngineCertificateAsAClient(t *testing.T) {
	a := roleAuthority(t)
	pool := a.CA().Pool()
	gw, err := a.Issue(t.Context(), Server, identity.GatewayName, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := a.Issue(t.Context(), Server, "wakegate-engine-0", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fixedCert := func(l *Leaf) func() *tls.Certificate {
		c := l.TLSCertificate()
		return func() *tls.Certificate { return c }
	}
	// The gateway's port, as cmd/wakegate wires it.
	gatewayPort := RefuseRevoked(ServerTLS(fixedCert(gw), pool), a.IsRevoked)
	if err := serverHandshake(t, gatewayPort, ClientTLS(fixedCert(engine), pool, "127.0.0.1")); err == nil {
		t.Fatal("the gateway's port accepted an engine certificate as a client")
	}
	// The gateway's own certificate still dials an engine's port.
	enginePort := ServerTLS(fixedCert(engine), pool)
	if err := serverHandshake(t, enginePort, ClientTLS(fixedCert(gw), pool, "127.0.0.1")); err != nil {
		t.Fatalf("an engine's port refused the gateway: %v", err)
	}
}

// serverHandshake runs one handshake over loopback TCP and returns the
// server's verdict.
func serverHandshake(t *testing.T, srv, cli *tls.Config) error {
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
		tc := tls.Server(c, srv)
		verdict <- tc.HandshakeContext(ctx)
		tc.Close()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cli)
	if err == nil {
		defer c.Close()
	}
	return <-verdict
}

// TestEngineCertificateRenewsAtTheCAAPIWithoutClientUsage: an engine's
// certificate only serves, yet renews over mTLS at the CA API as before;
// a certificate of another CA still cannot.
func TestEngineCertificateRenewsAtTheCAAPIWithoutClientUsage(t *testing.T) {
	a, url := servedAuthority(t, nil)
	tok, err := a.CA().Servers.Token("wakegate-engine-0", []string{"wakegate-engine-0"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	enr, err := Enroll(t.Context(), url, a.CA().Fingerprint(), tok, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := enr.Renew(t.Context(), enr.Cert)
	if err != nil {
		t.Fatalf("renew an engine certificate: %v", err)
	}
	if renewed.Leaf.SerialNumber.Cmp(enr.Cert.Leaf.SerialNumber) == 0 {
		t.Error("renewal returned the same certificate")
	}
	if !slices.Equal(renewed.Leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || !slices.Equal(renewed.Leaf.DNSNames, []string{"wakegate-engine-0"}) {
		t.Errorf("renewed engine certificate has %v %v, want server auth and its name only", renewed.Leaf.ExtKeyUsage, renewed.Leaf.DNSNames)
	}

	other, err := Init(t.TempDir(), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(Server, "wakegate-engine-0", []string{"wakegate-engine-0"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := enr.Renew(t.Context(), foreign.TLSCertificate()); err == nil {
		t.Fatalf("the CA renewed another CA's certificate: %s", c.Leaf.SerialNumber)
	}
}
