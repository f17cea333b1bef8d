package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDaggerFlagsFailBeforeAnySocketOpens: what an engine or a gateway
// needs to run Dagger is judged before any token is spent or socket opened,
// and the error says what to pass or run. The CA URL points at a closed
// port: getting past the checks would fail on it instead.
func TestDaggerFlagsFailBeforeAnySocketOpens(t *testing.T) {
	t.Setenv("WAKEGATE_DAGGER_BIN", "")
	t.Setenv("WAKEGATE_TOKEN", "tok")
	t.Setenv("WAKEGATE_ENGINE_NET", "")
	empty := t.TempDir()
	full := t.TempDir()
	for _, f := range []string{"dagger-engine", "dagger-init", "dnsname"} {
		if err := os.WriteFile(filepath.Join(full, f), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	engine := []string{"engine", "--state", t.TempDir(), "--listen", "127.0.0.1:0", "--ca-url", "https://127.0.0.1:1", "--ca-fingerprint", "ab"}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{append(engine, "--engine", "docker"), []string{`engine kind "docker"`}},
		{append(engine, "--engine", "dagger"), []string{"--engine-bin", "$WAKEGATE_DAGGER_BIN"}},
		{append(engine, "--engine", "dagger", "--engine-bin", empty), []string{"dagger-engine is missing", "dagger-init is missing", "dnsname is missing", "make dagger"}},
		{append(engine, "--engine", "dagger", "--engine-bin", full, "--engine-net", "bridge"), []string{`engine network "bridge"`}},
		{append(engine, "--engine", "dagger", "--engine-bin", full, "--engine-cmd", "dagger-engine"), []string{"exclude each other"}},
		{append(engine, "--engine", "dagger", "--engine-bin", full, "--stop-timeout", "5s"), []string{"clean-shutdown marker"}},
		{append(engine, "--engine", "dagger", "--engine-bin", full, "--kill-timeout", "60s"), []string{"--stop-timeout 1m0s", "--kill-timeout 1m0s"}},
		{append(engine, "--buildkitd", "/bin/true", "--stop-timeout", "5m", "--kill-timeout", "300s"), []string{"do not fit in --kill-timeout 5m0s"}},
		{[]string{"gateway", "--ca-dir", "ca", "--state", "s", "--engine", "podman"}, []string{"--engine must be buildkit or dagger"}},
		{[]string{"gateway", "--ca-dir", "ca", "--state", "s", "--engine", "dagger", "--provider", "exec", "--exec-start", "x", "--exec-stop", "y"}, []string{"--engine dagger is for the local provider"}},
		{[]string{"gateway", "--ca-dir", "/nonexistent", "--state", "s", "--engine", "dagger", "--engine-bin", empty}, []string{"dagger-engine is missing"}},
	} {
		out := newLogWatch()
		err := run(t.Context(), tc.args, out, out)
		if err == nil {
			t.Errorf("wakegate %s succeeded", strings.Join(tc.args, " "))
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("wakegate %s: %v\nwant it to say %q", strings.Join(tc.args, " "), err, w)
			}
		}
		if strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("wakegate %s got as far as the CA before failing: %v", strings.Join(tc.args, " "), err)
		}
	}
}
