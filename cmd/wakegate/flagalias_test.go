package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// TestOldFlagSpellingsStillWork: certs' --dir, --name and --ttl, the
// engine's --name, work as before for one release, silently (scripts read
// these commands' output), and do what their new names do.
func TestOldFlagSpellingsStillWork(t *testing.T) {
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	work := t.TempDir()
	ca, creds := filepath.Join(work, "ca"), filepath.Join(work, "creds")
	runOld := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), args, &stdout, &stderr); err != nil {
			t.Fatalf("wakegate %s: %v\n%s", strings.Join(args, " "), err, &stderr)
		}
		if stderr.Len() != 0 {
			t.Errorf("wakegate %s wrote to stderr: %q", strings.Join(args, " "), &stderr)
		}
		return stdout.String()
	}
	runOld("certs", "init", "--dir", ca, "--name", "acme", "--no-password")
	root, err := certs.RootFingerprint(ca)
	if err != nil {
		t.Fatalf("certs init --dir made no CA: %v", err)
	}
	if fp := strings.TrimSpace(runOld("certs", "fingerprint", "--dir", ca)); fp != root {
		t.Errorf("certs fingerprint --dir = %q, want %q", fp, root)
	}
	runOld("certs", "issue", "--dir", ca, "--name", "team-a", "--ttl", "2h", "--out", creds)
	pemBytes, err := os.ReadFile(filepath.Join(creds, certs.ClientCertFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "team-a" {
		t.Errorf("--name team-a issued %q", leaf.Subject.CommonName)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 2*time.Hour-2*time.Minute || life > 2*time.Hour+2*time.Minute {
		t.Errorf("--ttl 2h issued a certificate for %s", life)
	}
	if tok := runOld("certs", "token", "--dir", ca, "--name", "team-b", "--ttl", "5m"); strings.Count(tok, ".") != 2 {
		t.Errorf("certs token with old spellings printed %q, want a JWT", tok)
	}
	if out := runOld("certs", "list", "--dir", ca); !strings.Contains(out, "team-a") {
		t.Errorf("certs list --dir lacks team-a:\n%s", out)
	}
	// The engine's --name reaches the same check as --identity.
	for _, name := range []string{"--name", "--identity"} {
		var out bytes.Buffer
		err := run(t.Context(), []string{"engine", "--state", "s", "--ca-url", "u", "--ca-fingerprint", "f", name, "x"}, &out, &out)
		if err == nil || !strings.Contains(err.Error(), "--identity must start with wakegate-engine-") {
			t.Errorf("engine %s x = %v, want the identity refused", name, err)
		}
	}
}

// TestHelpListsOnlyTheNewSpellings: no command's help lists an old
// spelling; each lists the new one.
func TestHelpListsOnlyTheNewSpellings(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		want, not []string
	}{
		{[]string{"certs", "init", "-h"}, []string{"ca-dir", "ca-name"}, []string{"dir", "name"}},
		{[]string{"certs", "issue", "-h"}, []string{"ca-dir", "identity", "cert-ttl"}, []string{"dir", "name", "ttl"}},
		{[]string{"certs", "token", "-h"}, []string{"ca-dir", "identity", "token-ttl"}, []string{"dir", "name", "ttl"}},
		{[]string{"certs", "fingerprint", "-h"}, []string{"ca-dir"}, []string{"dir"}},
		{[]string{"certs", "revoke", "-h"}, []string{"ca-dir", "identity"}, []string{"dir", "name"}},
		{[]string{"certs", "list", "-h"}, []string{"ca-dir"}, []string{"dir"}},
		{[]string{"certs", "rotate-intermediate", "-h"}, []string{"ca-dir", "ca-name"}, []string{"dir", "name"}},
		{[]string{"engine", "-h"}, []string{"identity"}, []string{"name"}},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), tc.args, &stdout, &stderr); err != nil {
			t.Fatalf("wakegate %s: %v", strings.Join(tc.args, " "), err)
		}
		help := stdout.String()
		for _, f := range tc.want {
			if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(f) + `\b`).MatchString(help) {
				t.Errorf("wakegate %s does not list --%s:\n%s", strings.Join(tc.args, " "), f, help)
			}
		}
		for _, f := range tc.not {
			if regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(f) + `(\s|$)`).MatchString(help) {
				t.Errorf("wakegate %s lists the old spelling --%s:\n%s", strings.Join(tc.args, " "), f, help)
			}
		}
	}
}
