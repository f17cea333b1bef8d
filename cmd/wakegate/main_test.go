package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/wakegate/wakegate/certs/oidctest"
)

// TestMain builds the wakegate binary that the local provider runs as each
// engine ('wakegate engine'): in-process gateways are test binaries, not
// wakegate. WAKEGATE_BIN, if set, names one already built.
//
// The emulated OIDC issuer's test root becomes the system's roots (Go reads
// SSL_CERT_FILE once per process, and children inherit it): gateways reach
// the issuer, and connect a job's token endpoint, as in production.
func TestMain(m *testing.M) {
	os.Setenv("SSL_CERT_FILE", oidctest.TrustFile())
	if os.Getenv("WAKEGATE_BIN") == "" {
		dir, err := os.MkdirTemp("", "wakegate-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bin := filepath.Join(dir, "wakegate")
		// -buildvcs=auto overrides a GOFLAGS=-buildvcs=false, so that the
		// binary carries its revision ('wakegate version') as make's does.
		cmd := exec.Command("go", "build", "-buildvcs=auto", "-o", bin, ".")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build wakegate for the end-to-end tests:", err)
			os.Exit(1)
		}
		os.Setenv("WAKEGATE_BIN", bin)
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}
