package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs/oidctest"
	"go.step.sm/crypto/jose"
)

const acmePolicy = `# CI jobs of acme's repositories, on branches
[[allow]]
repository = "acme/*"
ref = "refs/heads/*"
`

// oidcJob makes this process a GitHub Actions job of repository repo: its
// token endpoint is set in the environment, as GitHub sets it.
func oidcJob(t *testing.T, iss *oidctest.Issuer, repo string) *oidctest.Job {
	t.Helper()
	job := iss.JobEndpoint(t, oidctest.GitHubClaims(repo))
	for _, kv := range job.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return job
}

// startOIDCGateway starts a gateway with a real engine that trusts a fresh
// emulated issuer and the policy acmePolicy, at pol.
func startOIDCGateway(t *testing.T) (g *certGateway, iss *oidctest.Issuer, pol string) {
	t.Helper()
	iss = oidctest.NewIssuer(t)
	pol = filepath.Join(t.TempDir(), "policy.toml")
	rewritePolicy(t, pol, acmePolicy)
	return startCertGateway(t, "--oidc-issuer", iss.URL, "--policy", pol), iss, pol
}

func rewritePolicy(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

var (
	oidcEnrolledRE = regexp.MustCompile(`msg="OIDC enrolment" .*repository=acme/app`)
	policyReloadRE = regexp.MustCompile(`msg="policy reloaded"`)
	refusedByPolRE = regexp.MustCompile(`msg="connection refused by policy" identity=github:acme/app .*repository=acme/app ref=refs/heads/main`)
)

// TestGitHubActionsJobBuildsWithItsOIDCTokenAndNoSecret is the path of a
// CI job with no stored secret: its OIDC token from the (emulated) GitHub
// token endpoint is exchanged at a real gateway's CA for a certificate
// naming its repository, and a real buildkitd builds through it. Every kind
// of bad token is refused with its own words and no certificate recorded;
// a policy change refuses a certificate issued before it.
func TestGitHubActionsJobBuildsWithItsOIDCTokenAndNoSecret(t *testing.T) {
	g, iss, pol := startOIDCGateway(t)
	buildctl := tool(t, "WAKEGATE_BUILDCTL", "buildctl")
	bctx := buildContext(t, staticBusybox(t))
	job := oidcJob(t, iss, "acme/app")
	oidcArgs := []string{"--gateway", g.addr, "--oidc", "github", "--ca-url", g.caURL, "--ca-fingerprint", g.fp}

	out := newLogWatch()
	args := append(append([]string{"connect"}, oidcArgs...), append([]string{"--", buildctl}, buildctlArgs(bctx)...)...)
	if err := run(t.Context(), args, out, out); err != nil {
		t.Fatalf("connect --oidc github -- buildctl build: %v\n%s\ngateway log:\n%s", err, out, g.logs)
	}
	if !strings.Contains(out.String(), "identity=github:acme/app") {
		t.Errorf("connect did not report its OIDC identity:\n%s", out)
	}
	g.logs.waitFor(t, oidcEnrolledRE, 0, time.Second)
	// The repository is the session's placement key: its engine holds its cache.
	g.logs.waitFor(t, regexp.MustCompile(`msg="connection closed" identity=github:acme/app remote=\S+ key=repo:acme/app`), 0, 5*time.Second)
	if job.Requests() != 1 {
		t.Errorf("the job's token endpoint was asked %d times, want 1", job.Requests())
	}

	issued := func() int { return strings.Count(mustRun(t, "certs", "list", "--dir", g.caDir), "github:") }
	before := issued()
	acme := oidctest.GitHubClaims("acme/app")
	expired := acme
	expired.IssuedAt = jose.NewNumericDate(time.Now().Add(-time.Hour))
	for _, tc := range []struct {
		name  string
		setup func()
		extra []string
		want  string
	}{
		{"disallowed repository", func() { job.SetClaims(oidctest.GitHubClaims("evil/app")) }, nil,
			"repository evil/app is not allowed by the gateway's policy"},
		{"disallowed ref", func() {
			c := acme
			c.Ref = "refs/pull/7/merge"
			job.SetClaims(c)
		}, nil, "repository acme/app is not allowed by the gateway's policy (ref refs/pull/7/merge)"},
		{"wrong audience", nil, []string{"--oidc-audience", "sts.amazonaws.com"},
			`the OIDC token is for audience "sts.amazonaws.com"; this gateway accepts "wakegate"`},
		{"expired token", func() { job.SetClaims(expired) }, nil, "the OIDC token expired at"},
		{"untrusted issuer", func() { job.SetMint(iss.ForeignToken) }, nil, "this gateway trusts only " + iss.URL},
		{"unknown key id", func() { job.SetMint(iss.UnpublishedToken) }, nil, "which the issuer " + iss.URL + " does not publish"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer job.SetClaims(acme)
			defer job.SetMint(nil)
			if tc.setup != nil {
				tc.setup()
			}
			out := newLogWatch()
			err := run(t.Context(), append(append([]string{"connect", "--wait", "--wait-timeout", "30s"}, oidcArgs...), tc.extra...), out, out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("connect = %v, want an error saying %q\n%s", err, tc.want, out)
			}
			if n := issued(); n != before {
				t.Fatalf("%d OIDC certificates recorded after a refusal, want %d", n, before)
			}
		})
	}
	if !strings.Contains(g.logs.String(), `msg="OIDC enrolment refused by policy" remote=`) ||
		!strings.Contains(g.logs.String(), "repository=evil/app") {
		t.Errorf("the gateway did not log the refusal with the job's claims:\n%s", g.logs)
	}

	t.Run("renewal enrols again with a fresh job token", func(t *testing.T) {
		asked := job.Requests()
		sc := background(t, append([]string{"connect", "--listen", "127.0.0.1:0", "--cert-ttl", "6s"}, oidcArgs...)...)
		m, _ := sc.waitFor(t, sidecarRE, 0, 30*time.Second)
		// Renewed at two thirds of its 6 s life, with a new job token.
		sc.waitFor(t, regexp.MustCompile(`msg="certificate renewed" cert=client`), 0, 30*time.Second)
		if n := job.Requests() - asked; n < 2 {
			t.Fatalf("the job's token endpoint was asked %d times for an enrolment and a renewal, want 2", n)
		}
		b, err := exec.CommandContext(t.Context(), buildctl, append([]string{"--addr", "tcp://" + m[1]}, buildctlArgs(bctx)...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("build with the renewed certificate: %v\n%s", err, b)
		}
	})

	t.Run("a key rotation at the issuer is followed", func(t *testing.T) {
		iss.Rotate() // the key set now holds only the new key
		if out, err := g.connectWait(t, oidcArgs[2:]...); err != nil {
			t.Fatalf("connect after the issuer rotated its key: %v\n%s", err, out)
		}
	})

	t.Run("a refused job's background sidecar fails its step and leaves nothing running", func(t *testing.T) {
		job.SetClaims(oidctest.GitHubClaims("evil/app"))
		defer job.SetClaims(acme)
		pidFile := filepath.Join(t.TempDir(), "connect.pid")
		out := newLogWatch()
		err := run(t.Context(), append([]string{"connect", "--background", "--pid-file", pidFile, "--wait-timeout", "30s"}, oidcArgs...), out, out)
		if err == nil || !strings.Contains(err.Error(), "repository evil/app is not allowed by the gateway's policy") || !strings.Contains(err.Error(), "sidecar log: "+pidFile+".log") {
			t.Fatalf("connect --background for a refused job = %v, want the refusal and the log's path\n%s", err, out)
		}
		if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
			t.Fatalf("pid file written for a sidecar that never served: %v", err)
		}
	})

	t.Run("a certificate issued before the policy changed is refused after", func(t *testing.T) {
		sc := background(t, append([]string{"connect", "--listen", "127.0.0.1:0"}, oidcArgs...)...)
		m, _ := sc.waitFor(t, sidecarRE, 0, 30*time.Second)
		build := func() ([]byte, error) {
			return exec.CommandContext(t.Context(), buildctl, append([]string{"--addr", "tcp://" + m[1]}, buildctlArgs(bctx)...)...).CombinedOutput()
		}
		if b, err := build(); err != nil {
			t.Fatalf("build through the sidecar before the change: %v\n%s", err, b)
		}
		mark := g.logs.len()
		rewritePolicy(t, pol, "[[allow]]\nrepository = \"acme/other\"\n")
		g.logs.waitFor(t, policyReloadRE, mark, 10*time.Second)
		if b, err := build(); err == nil {
			t.Fatalf("build with a certificate the new policy refuses succeeded:\n%s", b)
		}
		g.logs.waitFor(t, refusedByPolRE, mark, 5*time.Second)
		// A new enrolment is refused by the CA, in words.
		out := newLogWatch()
		err := run(t.Context(), append([]string{"connect", "--wait", "--wait-timeout", "30s"}, oidcArgs...), out, out)
		if err == nil || !strings.Contains(err.Error(), "repository acme/app is not allowed by the gateway's policy") {
			t.Fatalf("connect after the change = %v, want the policy's refusal", err)
		}
	})
}

// TestOIDCEnrolmentIsOffWithoutAPolicy: a gateway without --policy refuses
// every OIDC token, saying so, and lets named certificates in as before.
func TestOIDCEnrolmentIsOffWithoutAPolicy(t *testing.T) {
	iss := oidctest.NewIssuer(t)
	g := startCertGateway(t, "--oidc-issuer", iss.URL)
	oidcJob(t, iss, "acme/app")
	_, err := g.connectWait(t, "--oidc", "github", "--ca-url", g.caURL, "--ca-fingerprint", g.fp)
	if err == nil || !strings.Contains(err.Error(), "no policy: OIDC enrolment is off") {
		t.Fatalf("connect --oidc github without a policy = %v, want the refusal", err)
	}
	if d, j := iss.Fetches(); d+j != 0 {
		t.Errorf("a gateway without a policy fetched the issuer's documents %d times", d+j)
	}
	if strings.Contains(mustRun(t, "certs", "list", "--dir", g.caDir), "github:") {
		t.Error("a certificate was recorded for a refused job")
	}
}
