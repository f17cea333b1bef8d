package certs

import (
	"os"
	"testing"

	"github.com/wakegate/wakegate/certs/oidctest"
)

// TestMain makes the emulated OIDC issuer's test root the system's roots:
// the CA reaches an issuer, and a job its token endpoint, with the system's
// roots, as in production, and Go reads SSL_CERT_FILE once per process.
func TestMain(m *testing.M) {
	os.Setenv("SSL_CERT_FILE", oidctest.TrustFile())
	os.Exit(m.Run())
}
