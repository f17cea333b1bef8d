package main

import (
	"crypto/tls"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/connect"
	"github.com/wakegate/wakegate/internal/bktest"
)

var (
	listeningRE     = regexp.MustCompile(`msg="gateway listening" addr=(\S+)`)
	sidecarRE       = regexp.MustCompile(`msg="connect listening" addr=(\S+)`)
	engineReadyRE   = regexp.MustCompile(`msg="engine ready" engine=engine-0 wake_ms=(\d+)`)
	engineStoppedRE = regexp.MustCompile(`msg="engine stopped" engine=engine-0`)
)

// TestEndToEndBuildCachedAcrossIdleStop is the product's main job: builds
// through connect and the gateway on a real buildkitd, a second build fully
// cached, the engine stopped after the idle period, and a third build that
// wakes it and is still cached because its state directory persisted. On
// the way, clients without a certificate from the CA are refused.
func TestEndToEndBuildCachedAcrossIdleStop(t *testing.T) {
	requireRoot(t)
	buildkitd := tool(t, "WAKEGATE_BUILDKITD", "buildkitd")
	buildctl := tool(t, "WAKEGATE_BUILDCTL", "buildctl")
	bctx := buildContext(t, staticBusybox(t))

	work := t.TempDir()
	caDir, creds := filepath.Join(work, "ca"), filepath.Join(work, "creds")
	mustRun(t, "certs", "init", "--dir", caDir, "--no-password")
	mustRun(t, "certs", "issue", "--dir", caDir, "--name", "ci", "--out", creds)
	// Unix socket paths are short: keep engine state out of the long test dir.
	state, err := os.MkdirTemp("", "wg-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })

	gw := background(t, "gateway", "--ca-dir", caDir, "--state", state, "--buildkitd", buildkitd,
		"--listen", "127.0.0.1:0", "--admin", "", "--ca-listen", "127.0.0.1:0", "--idle", "2s", "--wake-timeout", "60s")
	m, _ := gw.waitFor(t, listeningRE, 0, 10*time.Second)
	gwAddr := m[1]

	build := func(name string) string { return buildThrough(t, name, gwAddr, creds, buildctl, bctx, gw) }

	t.Log("build 1: wakes the engine, runs the RUN step")
	out := build("build 1")
	if !strings.Contains(out, "wakegate: engine engine-0 ready after") {
		t.Errorf("connect did not report the engine ready:\n%s", out)
	}
	if runStepCached(t, out) {
		t.Fatalf("first build on an empty cache reports its RUN step CACHED:\n%s", out)
	}
	gw.waitFor(t, engineReadyRE, 0, time.Second)

	t.Log("build 2: every step cached")
	if out := build("build 2"); !runStepCached(t, out) {
		t.Fatalf("second build is not CACHED:\n%s", out)
	}
	afterBuild2 := gw.len() // the engine is running here; its idle stop comes later

	t.Run("connect runs CMD with the engine address and exits with its status", func(t *testing.T) {
		out := newLogWatch()
		script := `test -n "$BUILDKIT_HOST" && test "$BUILDKIT_HOST" = "$_EXPERIMENTAL_DAGGER_RUNNER_HOST" && echo "host=$BUILDKIT_HOST" && exit 7`
		err := run(t.Context(), []string{"connect", "--gateway", gwAddr, "--creds", creds, "--listen", "127.0.0.1:0", "--", "sh", "-c", script}, out, out)
		var ee exitError
		if !errors.As(err, &ee) || int(ee) != 7 {
			t.Fatalf("connect -- sh = %v, want exit status 7\n%s", err, out)
		}
		if !regexp.MustCompile(`host=tcp://127\.0\.0\.1:\d+`).MatchString(out.String()) {
			t.Fatalf("CMD did not see BUILDKIT_HOST=tcp://127.0.0.1:PORT:\n%s", out)
		}
	})

	t.Run("client from another CA is refused", func(t *testing.T) {
		otherCA, otherCreds := filepath.Join(work, "other-ca"), filepath.Join(work, "other-creds")
		mustRun(t, "certs", "init", "--dir", otherCA, "--no-password")
		mustRun(t, "certs", "issue", "--dir", otherCA, "--name", "ci", "--out", otherCreds)
		// Trust the real gateway, present a certificate it does not trust.
		ca, err := os.ReadFile(filepath.Join(creds, certs.CACertFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(otherCreds, certs.CACertFile), ca, 0o644); err != nil {
			t.Fatal(err)
		}
		out := newLogWatch()
		err = run(t.Context(), []string{"connect", "--wait", "--gateway", gwAddr, "--creds", otherCreds}, out, out)
		if !errors.Is(err, connect.ErrRefused) || !strings.Contains(err.Error(), "rejected this client's certificate") {
			t.Fatalf("connect with a foreign certificate = %v, want a refusal naming the certificate", err)
		}
	})

	t.Run("client without a certificate is refused", func(t *testing.T) {
		cert, roots, err := certs.LoadClientCreds(creds)
		if err != nil {
			t.Fatal(err)
		}
		cfg := certs.ClientTLS(func() *tls.Certificate { return cert }, roots, "127.0.0.1")
		cfg.GetClientCertificate = nil
		c, err := tls.Dial("tcp", gwAddr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "certificate required") {
			t.Fatalf("read without a client certificate = %v, want the gateway's certificate-required alert", err)
		}
	})

	t.Log("waiting for the idle stop")
	_, stopAt := gw.waitFor(t, engineStoppedRE, afterBuild2, 60*time.Second)
	if n := countBuildkitd(t, state); n != 0 {
		t.Fatalf("%d buildkitd processes still run on %s after the idle stop", n, state)
	}

	t.Log("build 3: a plain sidecar; the held connection wakes the engine")
	sc := background(t, "connect", "--gateway", gwAddr, "--creds", creds, "--listen", "127.0.0.1:0")
	m, _ = sc.waitFor(t, sidecarRE, 0, 10*time.Second)
	m3 := m[1]
	cmd := exec.CommandContext(t.Context(), buildctl, append([]string{"--addr", "tcp://" + m3}, buildctlArgs(bctx)...)...)
	b3, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build 3: %v\n%s\ngateway log:\n%s", err, b3, gw)
	}
	if !runStepCached(t, string(b3)) {
		t.Fatalf("build after the idle stop is not CACHED (the cache did not persist):\n%s", b3)
	}
	m, _ = gw.waitFor(t, engineReadyRE, stopAt, time.Second)
	ms, _ := strconv.Atoi(m[1])
	t.Logf("wake after idle stop took %d ms", ms)

	t.Log("the sidecar's spares (connections made ahead) keep no engine awake, and wake it at their first byte")
	afterBuild3 := gw.len()
	_, stopAt = gw.waitFor(t, engineStoppedRE, afterBuild3, 60*time.Second)
	cmd = exec.CommandContext(t.Context(), buildctl, append([]string{"--addr", "tcp://" + m3}, buildctlArgs(bctx)...)...)
	if b4, err := cmd.CombinedOutput(); err != nil || !runStepCached(t, string(b4)) {
		t.Fatalf("build 4 through the same sidecar: %v (want CACHED)\n%s\ngateway log:\n%s", err, b4, gw)
	}
	gw.waitFor(t, engineReadyRE, stopAt, time.Second)
}

func countBuildkitd(_ *testing.T, dir string) int { return bktest.CountBuildkitd(dir) }
