package main

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// freePort returns a loopback address nothing listens on (now).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestEnrolmentWaitsForAGatewayThatIsNotUpYet: a CI job whose gateway is
// still starting (or restarting) retries its enrolment, saying so, instead
// of failing the job; its single-use token is spent once, when it gets
// through.
func TestEnrolmentWaitsForAGatewayThatIsNotUpYet(t *testing.T) {
	requireRoot(t)
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	caDir := filepath.Join(t.TempDir(), "ca")
	mustRun(t, "certs", "init", "--dir", caDir, "--no-password")
	fp := strings.TrimSpace(mustRun(t, "certs", "fingerprint", "--dir", caDir))
	tok := strings.TrimSpace(mustRun(t, "certs", "token", "--dir", caDir, "--name", "ci-job", "--ttl", "5m"))
	gwAddr, caAddr := freePort(t), freePort(t)

	out := newLogWatch()
	done := make(chan error, 1)
	go func() {
		done <- run(t.Context(), []string{"connect", "--wait", "--wait-timeout", "90s", "--gateway", gwAddr,
			"--ca-url", "https://" + caAddr, "--ca-fingerprint", fp, "--token", tok}, out, out)
	}()
	out.waitFor(t, regexp.MustCompile(`cannot reach the CA API at https://`+regexp.QuoteMeta(caAddr)+`.*; retrying in`), 0, 30*time.Second)

	state, err := os.MkdirTemp("", "wg-retry-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	background(t, "gateway", "--ca-dir", caDir, "--state", state, "--buildkitd", tool(t, "WAKEGATE_BUILDKITD", "buildkitd"),
		"--listen", gwAddr, "--admin", "", "--ca-listen", caAddr, "--idle", "30s")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("connect once the gateway is up: %v\n%s", err, out)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("connect did not finish after the gateway came up:\n%s", out)
	}
	if !strings.Contains(out.String(), "identity=ci-job") {
		t.Errorf("connect did not enrol as ci-job:\n%s", out)
	}
}
