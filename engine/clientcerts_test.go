package engine

import (
	"crypto/tls"
	"testing"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/identity"
)

// TestClientReportsEachEnginesCertificateExpiry: after a dial, the client
// knows when the engine's certificate expires, by the engine's name; before
// any dial it knows nothing.
func TestClientReportsEachEnginesCertificateExpiry(t *testing.T) {
	p := newRolePKI(t)
	addr := fakeEngine(t, p)
	c := &Client{TLS: certs.ClientTLS(func() *tls.Certificate { return p.gateway }, p.ca.Pool(), "")}
	if got := c.EngineCerts(); len(got) != 0 {
		t.Fatalf("before any dial: %v, want none", got)
	}
	conn, err := c.Dial(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	got := c.EngineCerts()
	want := p.engine.Leaf.NotAfter
	if len(got) != 1 || !got[identity.EngineName("0")].Equal(want) {
		t.Fatalf("engine certificates = %v, want %s: %s", got, identity.EngineName("0"), want)
	}
}
