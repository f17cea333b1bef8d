package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/fly/flytest"
)

// TestEndToEndThroughTheFlyEmulator drives the Fly path for real: 'fly
// init' creates the pool through fly-go's flaps client against the
// emulator, whose started machines are 'wakegate engine' processes with
// real buildkitd on their own loopback addresses. A build wakes a stopped
// machine, is CACHED after a stop and a start (the volume persisted), and
// the machine is stopped after the idle period.
func TestEndToEndThroughTheFlyEmulator(t *testing.T) {
	requireRoot(t)
	buildkitd := tool(t, "WAKEGATE_BUILDKITD", "buildkitd")
	buildctl := tool(t, "WAKEGATE_BUILDCTL", "buildctl")
	bctx := buildContext(t, staticBusybox(t))
	t.Setenv("WAKEGATE_BUILDKITD", buildkitd) // the machines' engines find it here
	t.Setenv("WAKEGATE_CA_PASSWORD", "")

	vols, err := os.MkdirTemp("", "wg-fly-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(vols) })
	em := flytest.New(flytest.Options{Dir: vols, StartDelay: 300 * time.Millisecond, StopDelay: 50 * time.Millisecond,
		FirstAddr: 100, RatePerSecond: 5, Burst: 5, Runner: &flytest.EngineRunner{Bin: os.Getenv("WAKEGATE_BIN")}})
	api := httptest.NewServer(em)
	t.Cleanup(func() { api.Close(); em.Close() })
	t.Setenv("FLY_FLAPS_BASE_URL", api.URL)
	t.Setenv("FLY_API_TOKEN", "emulator-token")

	out := mustRun(t, "fly", "init", "--app", "ci-engines", "--region", "ams", "--engines", "1", "--volume-size", "1", "--image", "wakegate-engine", "--idle", "0")
	if !strings.Contains(out, "(created)") {
		t.Fatalf("fly init created nothing:\n%s", out)
	}
	if again := mustRun(t, "fly", "init", "--app", "ci-engines", "--region", "ams", "--engines", "1", "--volume-size", "1", "--image", "wakegate-engine"); strings.Contains(again, "(created)") {
		t.Fatalf("re-running fly init created more:\n%s", again)
	}
	ms := em.Machines("ci-engines")
	if len(ms) != 1 || ms[0].Config.StopConfig == nil || ms[0].Config.StopConfig.Timeout.Duration != 300*time.Second {
		t.Fatalf("fly init made %d machines, want 1 with a 300s kill timeout: %+v", len(ms), ms)
	}
	id := ms[0].ID

	caDir, creds := filepath.Join(t.TempDir(), "ca"), filepath.Join(t.TempDir(), "creds")
	mustRun(t, "certs", "init", "--dir", caDir, "--no-password")
	mustRun(t, "certs", "issue", "--dir", caDir, "--name", "ci", "--out", creds)
	gw := background(t, "gateway", "--ca-dir", caDir, "--provider", "fly", "--fly-app", "ci-engines",
		"--listen", "127.0.0.1:0", "--admin", "", "--ca-listen", "127.0.0.1:0", "--idle", "2s", "--wake-timeout", "60s")
	m, _ := gw.waitFor(t, listeningRE, 0, 20*time.Second)
	gwAddr := m[1]
	if st := em.State("ci-engines", id); st != "created" && st != "stopped" {
		t.Fatalf("the machine is %s before any build", st)
	}

	build := func(name string) string { return buildThrough(t, name, gwAddr, creds, buildctl, bctx, gw) }
	if out := build("build 1"); runStepCached(t, out) {
		t.Fatalf("first build is CACHED on an empty volume:\n%s", out)
	}
	mark := gw.len()
	stoppedRE := regexp.MustCompile(`msg="engine stopped" engine=` + id)
	gw.waitFor(t, stoppedRE, mark, 60*time.Second)
	if st := em.State("ci-engines", id); st != "stopped" {
		t.Fatalf("after the idle period the machine is %s, want stopped", st)
	}
	if out := build("build 2"); !runStepCached(t, out) {
		t.Fatalf("build after a stop and a start is not CACHED (the volume did not persist):\n%s", out)
	}
	if got := em.Calls("start"); got != 2 {
		t.Fatalf("start calls = %d, want 2 (one per wake)", got)
	}
}
