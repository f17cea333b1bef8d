package envoy

import (
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// TestSnapshotSecretsMustBeExactlyTheNamedOnes: go-control-plane's
// Consistent ignores secrets, and in ADS mode a secret Envoy asks for that
// the snapshot lacks is never answered; the server's own check refuses a
// snapshot missing one, or holding one nobody names.
func TestSnapshotSecretsMustBeExactlyTheNamedOnes(t *testing.T) {
	for _, role := range []Role{Client, Engine} {
		c := Config{Role: role, Listen: "127.0.0.1:9080", Gateway: "gw.test:8443"}
		if role == Engine {
			c = Config{Role: role, Listen: "127.0.0.1:8372", Upstream: "unix:///run/bk.sock"}
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		l, err := c.Listener(Secrets{})
		if err != nil {
			t.Fatal(err)
		}
		clusters, err := c.Clusters(Secrets{})
		if err != nil {
			t.Fatal(err)
		}
		both := []*tlsv3.Secret{{Name: CertSecret}, {Name: TrustSecret}}
		if err := checkSecrets(l, clusters, both); err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		if err := checkSecrets(l, clusters, both[:1]); err == nil || !strings.Contains(err.Error(), TrustSecret) {
			t.Fatalf("%s: a snapshot without %s passed: %v", role, TrustSecret, err)
		}
		if err := checkSecrets(l, clusters, append(both, &tlsv3.Secret{Name: "stray"})); err == nil {
			t.Fatalf("%s: a snapshot with a secret nobody names passed", role)
		}
	}
}
