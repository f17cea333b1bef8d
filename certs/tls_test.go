package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"github.com/wakegate/wakegate/identity"
	"io"
	"net"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

type handshakeResult struct {
	server    tls.ConnectionState
	serverErr error
	client    tls.ConnectionState
	clientErr error
}

// handshake runs one TLS handshake over loopback TCP. In TLS 1.3 the client
// finishes before the server has judged its certificate, so the client then
// reads until the server's verdict (close_notify or an alert) arrives.
func handshake(t *testing.T, srv, cli *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	type side struct {
		cs  tls.ConnectionState
		err error
	}
	srvDone := make(chan side, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- side{err: err}
			return
		}
		tc := tls.Server(c, srv)
		err = tc.HandshakeContext(ctx)
		cs := tc.ConnectionState()
		tc.Close()
		srvDone <- side{cs, err}
	}()

	var res handshakeResult
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		<-srvDone
		t.Fatal(err)
	}
	tc := tls.Client(c, cli)
	res.clientErr = tc.HandshakeContext(ctx)
	if res.clientErr == nil {
		res.client = tc.ConnectionState()
		tc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := tc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			res.clientErr = err
		}
	}
	tc.Close()
	s := <-srvDone
	res.server, res.serverErr = s.cs, s.err
	return res
}

type party struct {
	ca     *certs.CA
	server *certs.Leaf
	client *certs.Leaf
}

func newParty(t *testing.T, name string) party {
	t.Helper()
	ca := newCA(t, name)
	srv, err := ca.Issue(certs.Server, "localhost", []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Issue(certs.Client, "ci-job-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return party{ca: ca, server: srv, client: cli}
}

func fixed(c *tls.Certificate) func() *tls.Certificate { return func() *tls.Certificate { return c } }

func TestMutualTLSHandshakeIdentifiesClient(t *testing.T) {
	p := newParty(t, "Test")
	res := handshake(t,
		certs.ServerTLS(fixed(p.server.TLSCertificate()), p.ca.Pool(), "proto/1"),
		withALPN(certs.ClientTLS(fixed(p.client.TLSCertificate()), p.ca.Pool(), "localhost"), "proto/1"))
	if res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("handshake failed: server %v, client %v", res.serverErr, res.clientErr)
	}
	if id := peerName(res.server); id != "ci-job-1" {
		t.Errorf("Identity = %q, want ci-job-1", id)
	}
	if res.server.Version != tls.VersionTLS13 {
		t.Errorf("negotiated version %x, want TLS 1.3", res.server.Version)
	}
	if res.server.NegotiatedProtocol != "proto/1" {
		t.Errorf("negotiated protocol %q, want proto/1", res.server.NegotiatedProtocol)
	}
	if len(res.client.VerifiedChains) == 0 || res.client.VerifiedChains[0][0].Subject.CommonName != "localhost" {
		t.Errorf("client did not verify the server's certificate")
	}
}

func withALPN(c *tls.Config, protos ...string) *tls.Config {
	c = c.Clone()
	c.NextProtos = protos
	return c
}

func TestServerTLSUsesCurrentCertificateOnEachHandshake(t *testing.T) {
	p := newParty(t, "Test")
	other, err := p.ca.Issue(certs.Server, "renewed", []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	current := p.server.TLSCertificate()
	srv := certs.ServerTLS(func() *tls.Certificate { return current }, p.ca.Pool())
	cli := certs.ClientTLS(fixed(p.client.TLSCertificate()), p.ca.Pool(), "localhost")
	// Full handshakes: a resumed one sends no certificate at all.
	cli.ClientSessionCache = nil
	for _, want := range []string{"localhost", "renewed"} {
		res := handshake(t, srv, cli)
		if res.serverErr != nil || res.clientErr != nil {
			t.Fatalf("handshake failed: server %v, client %v", res.serverErr, res.clientErr)
		}
		if got := res.client.PeerCertificates[0].Subject.CommonName; got != want {
			t.Fatalf("server presented %q, want %q", got, want)
		}
		current = other.TLSCertificate()
	}
}

func TestMutualTLSRefusesBadPeers(t *testing.T) {
	p := newParty(t, "Test")
	foreign := newParty(t, "Foreign")
	srvCert := fixed(p.server.TLSCertificate())
	cliCert := fixed(p.client.TLSCertificate())

	tests := []struct {
		name string
		srv  *tls.Config
		cli  *tls.Config
		// which side must refuse
		serverRefuses, clientRefuses bool
	}{
		{
			name:          "client certificate from another CA",
			srv:           certs.ServerTLS(srvCert, p.ca.Pool()),
			cli:           certs.ClientTLS(fixed(foreign.client.TLSCertificate()), p.ca.Pool(), "localhost"),
			serverRefuses: true, clientRefuses: true,
		},
		{
			name:          "client without a certificate",
			srv:           certs.ServerTLS(srvCert, p.ca.Pool()),
			cli:           certs.ClientTLS(fixed(&tls.Certificate{}), p.ca.Pool(), "localhost"),
			serverRefuses: true, clientRefuses: true,
		},
		{
			name:          "client presenting a server certificate",
			srv:           certs.ServerTLS(srvCert, p.ca.Pool()),
			cli:           certs.ClientTLS(srvCert, p.ca.Pool(), "localhost"),
			serverRefuses: true, clientRefuses: true,
		},
		{
			name:          "server certificate from another CA",
			srv:           certs.ServerTLS(fixed(foreign.server.TLSCertificate()), p.ca.Pool()),
			cli:           certs.ClientTLS(cliCert, p.ca.Pool(), "localhost"),
			serverRefuses: true, clientRefuses: true,
		},
		{
			name:          "server presenting a client certificate",
			srv:           certs.ServerTLS(cliCert, p.ca.Pool()),
			cli:           certs.ClientTLS(cliCert, p.ca.Pool(), "ci-job-1"),
			serverRefuses: true, clientRefuses: true,
		},
		{
			name:          "server name not in the certificate",
			srv:           certs.ServerTLS(srvCert, p.ca.Pool()),
			cli:           certs.ClientTLS(cliCert, p.ca.Pool(), "gateway.example"),
			serverRefuses: true, clientRefuses: true,
		},
		{
			name:          "client limited to TLS 1.2",
			srv:           certs.ServerTLS(srvCert, p.ca.Pool()),
			cli:           maxTLS12(certs.ClientTLS(cliCert, p.ca.Pool(), "localhost")),
			serverRefuses: true, clientRefuses: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := handshake(t, tt.srv, tt.cli)
			if tt.serverRefuses && res.serverErr == nil {
				t.Errorf("server accepted the handshake (identity %q)", peerName(res.server))
			}
			if tt.clientRefuses && res.clientErr == nil {
				t.Errorf("client saw no refusal")
			}
			if id := peerName(res.server); id != "" {
				t.Errorf("refused handshake has identity %q", id)
			}
		})
	}
}

func maxTLS12(c *tls.Config) *tls.Config {
	c = c.Clone()
	c.MinVersion = tls.VersionTLS12
	c.MaxVersion = tls.VersionTLS12
	return c
}

func TestIdentityIsEmptyWithoutVerifiedChain(t *testing.T) {
	p := newParty(t, "Test")
	tests := []struct {
		name string
		cs   tls.ConnectionState
		want string
	}{
		{"no handshake", tls.ConnectionState{}, ""},
		{"peer certificate but not verified", tls.ConnectionState{PeerCertificates: []*x509.Certificate{p.client.Cert}}, ""},
		{"empty first chain", tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{}}}, ""},
		{"verified chain", tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{p.client.Chain}}, "ci-job-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := peerName(tt.cs); got != tt.want {
				t.Fatalf("Identity = %q, want %q", got, tt.want)
			}
		})
	}
}

// peerName is the verified peer's name of a handshake, "" when unverified.
func peerName(cs tls.ConnectionState) string {
	p, _ := identity.FromConn(cs)
	return p.Name
}
