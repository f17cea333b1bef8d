package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/identity"
)

// A single-use token is a CI job's or an engine's only way in: a typo in
// any other flag must fail before it is spent. Each case fails, and the
// same token enrols afterwards.

// Not parallel: it sets the process environment.
func TestBadEngineFlagsLeaveItsTokenUnspent(t *testing.T) {
	h := newProviderHarness(t)
	name := identity.EngineName("0")
	tok, err := h.ca.Servers.Token(name, []string{name}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("WAKEGATE_TOKEN", tok)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		state string
		args  []string
		want  string
	}{
		{"its port in use", t.TempDir(), []string{"--listen", busy.Addr().String()}, "address already in use"},
		{"a buildkitd config that is not there", t.TempDir(), []string{"--buildkitd-config", filepath.Join(t.TempDir(), "buildkitd.toml")}, "buildkitd config"},
		{"a state directory that is a file", file, nil, "is not a directory"},
		{"a stop that cannot fit the kill timeout", t.TempDir(), []string{"--stop-timeout", "1m", "--kill-timeout", "30s"}, "kill"},
		{"a log level", t.TempDir(), []string{"--log-level", "loud"}, "--log-level"},
		{"a stray argument", t.TempDir(), []string{"extra"}, "unexpected argument"},
	} {
		args := append([]string{"engine", "--state", tc.state, "--listen", "127.0.0.1:0", "--engine-cmd", "true", "--name", name,
			"--ca-url", h.caSvc.url, "--ca-fingerprint", h.ca.Fingerprint()}, tc.args...)
		out := newLogWatch()
		err := run(t.Context(), args, out, out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: wakegate engine = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	h.enrol(t, tok) // fails the test if a case spent it
}

// Not parallel: it sets the process environment.
func TestBadConnectFlagsLeaveItsTokenUnspent(t *testing.T) {
	t.Setenv("WAKEGATE_TOKEN", "")
	h := newProviderHarness(t)
	tok, err := h.ca.Clients.Token("ci-job", []string{"ci-job"}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"its port in use", []string{"--listen", busy.Addr().String()}, "address already in use"},
		// Under the CA's minimum: the CA would spend the token on a
		// certificate that expires before it is used.
		{"a certificate lifetime the CA refuses", []string{"--cert-ttl", "1s"}, "--cert-ttl"},
		{"a log level", []string{"--log-level", "loud"}, "--log-level"},
	} {
		// With a command, so that a case that got through would end, at
		// the unreachable gateway, within its wait timeout.
		args := append(append([]string{"connect", "--gateway", "127.0.0.1:1", "--token-file", tokFile,
			"--ca-url", h.caSvc.url, "--ca-fingerprint", h.ca.Fingerprint(), "--wait-timeout", "5s"}, tc.args...), "--", "true")
		out := newLogWatch()
		err := run(t.Context(), args, out, out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: wakegate connect = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	h.enrol(t, tok) // fails the test if a case spent it
}
