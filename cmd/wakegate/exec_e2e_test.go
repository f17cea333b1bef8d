package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestEndToEndThroughTheExecProvider runs the gateway with engines started
// and stopped by operator commands (scripts/exec-local, whose "host" is
// this machine): the provider interface is small enough for a shell script.
func TestEndToEndThroughTheExecProvider(t *testing.T) {
	requireRoot(t)
	t.Setenv("WAKEGATE_BUILDKITD", tool(t, "WAKEGATE_BUILDKITD", "buildkitd"))
	buildctl := tool(t, "WAKEGATE_BUILDCTL", "buildctl")
	bctx := buildContext(t, staticBusybox(t))
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	root, err := os.MkdirTemp("", "wg-exec-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	t.Setenv("WAKEGATE_EXEC_ROOT", root)
	scripts, err := filepath.Abs(filepath.Join("..", "..", "scripts", "exec-local"))
	if err != nil {
		t.Fatal(err)
	}
	caDir, creds := filepath.Join(t.TempDir(), "ca"), filepath.Join(t.TempDir(), "creds")
	mustRun(t, "certs", "init", "--dir", caDir, "--no-password")
	mustRun(t, "certs", "issue", "--dir", caDir, "--name", "ci", "--out", creds)
	gw := background(t, "gateway", "--ca-dir", caDir, "--provider", "exec",
		"--exec-start", "sh "+filepath.Join(scripts, "start.sh"), "--exec-stop", "sh "+filepath.Join(scripts, "stop.sh"),
		"--exec-status", "sh "+filepath.Join(scripts, "status.sh"),
		"--listen", "127.0.0.1:0", "--admin", "", "--ca-listen", "127.0.0.1:0", "--idle", "2s")
	m, _ := gw.waitFor(t, listeningRE, 0, 20*time.Second)
	gwAddr := m[1]
	build := func(name string) string { return buildThrough(t, name, gwAddr, creds, buildctl, bctx, gw) }
	if out := build("build 1"); runStepCached(t, out) {
		t.Fatalf("first build is CACHED:\n%s", out)
	}
	mark := gw.len()
	gw.waitFor(t, regexp.MustCompile(`msg="engine stopped" engine=engine-0`), mark, 60*time.Second)
	if n := countBuildkitd(t, root); n != 0 {
		t.Fatalf("%d buildkitd left after the exec stop", n)
	}
	if out := build("build 2"); !runStepCached(t, out) {
		t.Fatalf("build after an exec stop and start is not CACHED:\n%s", out)
	}
}
