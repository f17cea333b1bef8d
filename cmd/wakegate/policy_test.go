package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writePolicy(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPolicyCheckCountsTheRulesOfAGoodFile(t *testing.T) {
	file := writePolicy(t, `
[[allow]]
repository = "acme/*"
ref = "refs/heads/*"

[[allow]]
owner = "acme"
environment = "production"

[[allow]]
name = "team-*"
`)
	out := newLogWatch()
	if err := run(t.Context(), []string{"policy", "check", file}, out, out); err != nil {
		t.Fatalf("policy check: %v\n%s", err, out)
	}
	if want := file + ": 3 rules (2 for OIDC-enrolled jobs, 1 for named identities)\n"; out.String() != want {
		t.Fatalf("policy check printed %q, want %q", out, want)
	}
}

func TestPolicyCheckPrintsEveryProblemAndFails(t *testing.T) {
	file := writePolicy(t, `[[allow]]
repository = "acme/*"
colour = "blue"

[[allow]]
ref = "refs/heads/main"
`)
	out := newLogWatch()
	err := run(t.Context(), []string{"policy", "check", file}, out, out)
	if err == nil || errors.Is(err, errUsage) || err.Error() != file+": 2 problems" {
		t.Fatalf("policy check of a bad file = %v, want a failure counting 2 problems", err)
	}
	for _, want := range []string{
		file + `:3: unknown key "colour" in a rule`,
		file + ":5: rule matches any repository on GitHub: add repository or owner",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestPolicyCheckUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error; "" for success
	}{
		{[]string{"policy", "check"}, "want one FILE"},
		{[]string{"policy", "check", "a", "b"}, "want one FILE"},
		{[]string{"policy", "check", filepath.Join(t.TempDir(), "missing.toml")}, "no such file"},
		{[]string{"policy", "frobnicate"}, "usage"},
		{[]string{"help", "policy"}, ""},
		{[]string{"policy", "check", "-h"}, ""},
	} {
		out := newLogWatch()
		err := run(t.Context(), tc.args, out, out)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("wakegate %s = %v", strings.Join(tc.args, " "), err)
		case tc.want == "" && !strings.Contains(out.String(), "[[allow]]"):
			t.Errorf("wakegate %s does not document the file format:\n%s", strings.Join(tc.args, " "), out)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("wakegate %s = %v, want an error containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
