package main

import (
	"errors"
	"strings"
	"testing"
)

func TestHelpCoversEveryCommand(t *testing.T) {
	for _, args := range [][]string{
		{"help"}, {"--help"},
		{"help", "gateway"}, {"gateway", "-h"},
		{"help", "connect"}, {"connect", "--help"},
		{"help", "certs"}, {"certs", "init", "-h"}, {"certs", "issue", "-h"},
		{"certs", "token", "-h"}, {"certs", "fingerprint", "-h"}, {"certs", "revoke", "-h"},
		{"certs", "list", "-h"}, {"certs", "rotate-intermediate", "-h"},
		{"help", "engine"}, {"engine", "-h"}, {"help", "fly"}, {"fly", "init", "-h"}, {"fly", "status", "-h"},
		{"dev", "fly-emulator", "-h"}, {"help", "simulate"},
		{"help", "config"}, {"config", "check", "-h"},
		{"help", "status"}, {"status", "-h"},
	} {
		out := newLogWatch()
		if err := run(t.Context(), args, out, out); err != nil {
			t.Errorf("wakegate %s: %v", strings.Join(args, " "), err)
			continue
		}
		if !strings.Contains(out.String(), "Usage:") && !strings.Contains(out.String(), "Commands:") {
			t.Errorf("wakegate %s printed no usage:\n%s", strings.Join(args, " "), out)
		}
	}
}

func TestBadFlagsFailBeforeAnythingStarts(t *testing.T) {
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	t.Setenv("WAKEGATE_TOKEN", "")
	t.Setenv("FLY_API_TOKEN", "")
	t.Setenv("WAKEGATE_CA_URL", "")
	t.Setenv("WAKEGATE_CA_FINGERPRINT", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"gateway", "--state", "s"}, "--ca-dir is required"},
		{[]string{"gateway", "--ca-dir", "ca"}, "--state is required"},
		{[]string{"gateway", "--ca-dir", "ca", "--state", "s", "--provider", "aws"}, `--provider "aws" is not supported`},
		{[]string{"gateway", "--ca-dir", "ca", "--state", "s", "--engines", "0"}, "--engines must be at least 1"},
		{[]string{"gateway", "--ca-dir", "ca", "--state", "s", "--listen", "nonsense"}, "--listen"},
		{[]string{"gateway", "--ca-dir", "/nonexistent", "--state", "s", "--buildkitd", "/bin/true"}, "certs init"},
		{[]string{"connect", "--creds", "c"}, "--gateway is required"},
		{[]string{"connect", "--gateway", "h:1"}, "credentials are required: --oidc github"},
		{[]string{"connect", "--gateway", "h:1", "--oidc", "gitlab"}, `--oidc "gitlab" is not supported`},
		{[]string{"connect", "--gateway", "h:1", "--oidc", "github"}, "--oidc needs --ca-url and --ca-fingerprint"},
		{[]string{"connect", "--gateway", "h:1", "--oidc", "github", "--creds", "c"}, "use one of --oidc, --token"},
		{[]string{"connect", "--gateway", "h:1", "--creds", "c", "--background"}, "--background needs --pid-file"},
		{[]string{"connect", "--gateway", "h:1", "--creds", "c", "--background", "--pid-file", "p", "--wait"}, "--background is exclusive"},
		{[]string{"connect", "--gateway", "h:1", "--creds", "c", "--pid-file", "p"}, "--pid-file and --log-file go with --background"},
		{[]string{"connect", "--gateway", "h:1", "--creds", "c", "--ahead", "-1"}, "--ahead must be between 0 and 16"},
		{[]string{"connect", "--gateway", "h:1", "--creds", "c", "--ahead", "17"}, "--ahead must be between 0 and 16"},
		{[]string{"gateway", "--ca-dir", "ca", "--state", "s", "--oidc-issuer", "http://x"}, "must be an https URL"},
		{[]string{"connect", "--gateway", "h:1", "--token", "x"}, "needs --ca-url and --ca-fingerprint"},
		{[]string{"connect", "--gateway", "h:1", "--token", "x", "--ca-url", "https://127.0.0.1:1", "--ca-fingerprint", "ab"}, "not a JWT"},
		{[]string{"certs", "init", "--ca-dir", "x"}, "need a password"},
		{[]string{"certs", "fingerprint", "--ca-dir", "/nonexistent"}, "certs init"},
		{[]string{"certs", "token", "--ca-dir", "x"}, "--identity is required"},
		{[]string{"certs", "revoke", "--ca-dir", "x"}, "either serial numbers or --identity"},
		{[]string{"certs", "list"}, "--ca-dir is required"},
		{[]string{"gateway", "--ca-dir", "ca", "--state", "s", "--cert-ttl", "1s"}, "--cert-ttl must be between"},
		{[]string{"gateway", "--ca-dir", "ca", "--provider", "fly"}, "--fly-app is required"},
		{[]string{"gateway", "--ca-dir", "ca", "--provider", "exec"}, "--exec-start and --exec-stop"},
		{[]string{"engine", "--state", "s"}, "--ca-url and --ca-fingerprint"},
		{[]string{"engine", "--state", "s", "--ca-url", "u", "--ca-fingerprint", "f", "--identity", "x"}, "--identity must start with wakegate-engine-"},
		{[]string{"fly", "init", "--app", "a"}, "--app, --region and --image are required"},
		{[]string{"fly", "status"}, "--app is required"},
		{[]string{"connect", "--gateway", "h:1", "--creds", "c", "--wait", "--", "true"}, "exclusive"},
		{[]string{"connect", "--gateway", "h:1", "--creds", "/nonexistent"}, "certs issue"},
		{[]string{"certs", "issue", "--ca-dir", "ca", "--identity", "x"}, "--out is required"},
		{[]string{"certs", "init"}, "--ca-dir is required"},
		{[]string{"gateway", "--ca-dir", "ca", "--state", "s", "--log-format", "xml"}, `--log-format "xml": want text or json`},
		{[]string{"engine", "--state", "s", "--ca-url", "u", "--ca-fingerprint", "f", "--log-format", "xml"}, `--log-format "xml": want text or json`},
		{[]string{"connect", "--gateway", "h:1", "--creds", "c", "--log-format", "xml"}, `--log-format "xml": want text or json`},
	} {
		out := newLogWatch()
		err := run(t.Context(), tc.args, out, out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("wakegate %s = %v, want an error containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

func TestUnknownCommandIsAUsageError(t *testing.T) {
	out := newLogWatch()
	if err := run(t.Context(), []string{"frobnicate"}, out, out); !errors.Is(err, errUsage) {
		t.Fatalf("unknown command = %v, want errUsage", err)
	}
	if !strings.Contains(out.String(), `unknown command "frobnicate"`) {
		t.Fatalf("output does not name the unknown command:\n%s", out)
	}
}

func TestSimulateComparesPoliciesOnTheSampleTrace(t *testing.T) {
	out := newLogWatch()
	if err := run(t.Context(), []string{"simulate", "--trace", "../../scripts/ci-week.csv", "--engines", "3"}, out, out); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	for _, want := range []string{"2127 jobs", "wakegate", "always-on", "fixed-idle=5m", "machine-hours", "cache hits"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if err := run(t.Context(), []string{"simulate", "--trace", "../../scripts/ci-week.csv", "--policy", "nonsense"}, out, out); err == nil {
		t.Error("an unknown policy was accepted")
	}
}
