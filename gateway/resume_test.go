package gateway

import (
	"crypto/tls"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/wire"
)

// TestResumedConnectionsAreJudgedAgain: a client that resumes its TLS
// session (connect keeps its tickets) presents no certificate, yet the
// gateway still knows who it is, asks the policy about it and refuses it
// once its certificate is revoked.
func TestResumedConnectionsAreJudgedAgain(t *testing.T) {
	var mu sync.Mutex // guards the fields below
	revoked := map[string]bool{}
	var judged []string
	refuse := false
	h := &fakeHost{addr: echoEngine(t)}
	g := startGatewayOpts(t, h, gatewayOptions{
		authorize: func(p identity.Peer) error {
			mu.Lock()
			defer mu.Unlock()
			judged = append(judged, p.Name)
			if refuse {
				return errRefusedByTest
			}
			return nil
		},
		config: func(c *Config) {
			c.TLS = certs.RefuseRevoked(c.TLS, func(serial string) (bool, error) {
				mu.Lock()
				defer mu.Unlock()
				return revoked[serial], nil
			})
		},
	})
	cli := certs.ClientTLS(func() *tls.Certificate { return g.client }, g.ca.Pool(), "127.0.0.1")
	echo := func(proto string) (*tls.Conn, error) {
		cfg := cli.Clone()
		cfg.NextProtos = []string{proto}
		c, err := tls.Dial("tcp", g.addr, cfg)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(15 * time.Second))
		if proto == wire.ProtoProxy {
			if _, err := c.Write([]byte("ping")); err != nil {
				return c, err
			}
			got := make([]byte, 4)
			_, err = io.ReadFull(c, got) // also takes in the session ticket
			return c, err
		}
		return c, nil
	}

	if _, err := echo(wire.ProtoProxy); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	c, err := echo(wire.ProtoProxy)
	if err != nil {
		t.Fatalf("second connection: %v", err)
	}
	if !c.ConnectionState().DidResume {
		t.Fatal("second connection did not resume: no session resumption between client and gateway")
	}
	mu.Lock()
	if len(judged) != 2 || judged[0] != "ci" || judged[1] != "ci" {
		t.Errorf("policy judged %q, want the identity ci at both handshakes", judged)
	}
	refuse = true
	mu.Unlock()

	// The policy now refuses: a resumed wake request hears it.
	w, err := echo(wire.ProtoWake)
	if err != nil {
		t.Fatal(err)
	}
	if !w.ConnectionState().DidResume {
		t.Fatal("wake request did not resume")
	}
	e, err := wire.NewReader(w).Next()
	if err != nil || e.Kind != wire.Refused {
		t.Fatalf("resumed wake request under a refusing policy: %+v, %v; want a refusal", e, err)
	}

	mu.Lock()
	refuse = false
	revoked[g.client.Leaf.SerialNumber.String()] = true
	mu.Unlock()
	// Revoked: the handshake that offers the session is refused (TLS 1.3
	// tells the client at its first read, or its write meets the close).
	if _, err := echo(wire.ProtoProxy); err == nil {
		t.Fatal("a revoked client's resumed connection was proxied")
	}
}

var errRefusedByTest = refusedError("refused by the test's policy")

type refusedError string

func (e refusedError) Error() string { return string(e) }
