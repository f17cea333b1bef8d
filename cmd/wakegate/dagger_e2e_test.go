package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/engine/daggertest"
)

// daggerThrough runs the dagger CLI with args through 'wakegate connect --'
// to the gateway at gwAddr, and returns connect's and the CLI's output; a
// failure shows the gateway's log and the engine's.
func daggerThrough(t *testing.T, name, gwAddr, creds, bin, engineDir string, gw *logWatch, args ...string) string {
	t.Helper()
	out := newLogWatch()
	cmd := append([]string{"connect", "--gateway", gwAddr, "--creds", creds, "--listen", "127.0.0.1:0", "--"}, daggertest.Command(t, bin, args...)...)
	ctx, cancel := context.WithTimeout(t.Context(), daggertest.CallTimeout)
	defer cancel()
	if err := run(ctx, cmd, out, out); err != nil {
		log, _ := os.ReadFile(filepath.Join(engineDir, "dagger.log"))
		t.Fatalf("%s: %v\n%s\ngateway log:\n%s\nengine log (tail):\n%s", name, err, out, gw, tail(string(log), 4000))
	}
	return out.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestDaggerThroughTheGatewayIdleStopWakeCached is the product's main job
// with a real Dagger engine: the dagger CLI through connect and the gateway
// wakes a local 'wakegate engine --engine dagger'; a query makes a directory
// with a new file and reads it back; a container from a busybox rootfs runs;
// the engine goes idle and the gateway stops it, cleanly, leaving nothing on
// the host; the next call wakes it and its withExec is CACHED.
func TestDaggerThroughTheGatewayIdleStopWakeCached(t *testing.T) {
	bin := daggertest.Bin(t)
	daggertest.RequireHost(t)
	rootfs := daggertest.Rootfs(t)

	work := t.TempDir()
	caDir, creds := filepath.Join(work, "ca"), filepath.Join(work, "creds")
	mustRun(t, "certs", "init", "--dir", caDir, "--no-password")
	mustRun(t, "certs", "issue", "--dir", caDir, "--name", "ci", "--out", creds)
	state, err := os.MkdirTemp("", "wg-dagger-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	engineDir := filepath.Join(state, "engine-0")
	before := daggertest.Snapshot(t, engineDir)

	// Registered before the gateway's own cleanup, so it runs after it: the
	// gateway's shutdown stops the engine it woke, cleanly too.
	var shutdownBegan time.Time
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		t.Logf("gateway shutdown with a running Dagger engine took %s", time.Since(shutdownBegan).Round(time.Millisecond))
		log, err := os.ReadFile(filepath.Join(engineDir, "dagger.log"))
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(log), "successfully marked clean shutdown"); n != 2 {
			t.Errorf("Dagger recorded %d clean shutdowns after the gateway's shutdown, want 2:\n%s", n, tail(string(log), 4000))
		}
		if left := daggertest.Leftovers(engineDir, daggertest.Namespaces{}); len(left) > 0 {
			t.Errorf("left on the host after the gateway's shutdown:\n%s", strings.Join(left, "\n"))
		}
		if d := before.Diff(daggertest.Snapshot(t, engineDir)); len(d) > 0 {
			t.Errorf("the host changed:\n%s", strings.Join(d, "\n"))
		}
	})
	gw := background(t, "gateway", "--ca-dir", caDir, "--state", state, "--engine", "dagger", "--engine-bin", bin,
		"--listen", "127.0.0.1:0", "--admin", "", "--ca-listen", "127.0.0.1:0", "--idle", "6s", "--wake-timeout", "60s")
	m, _ := gw.waitFor(t, listeningRE, 0, 10*time.Second)
	gwAddr := m[1]
	call := func(name string, args ...string) string {
		return daggerThrough(t, name, gwAddr, creds, bin, engineDir, gw, args...)
	}

	t.Log("query: wakes the engine, makes a directory with a new file, reads it back")
	out := call("query", daggertest.QueryArgs(t)...)
	if !strings.Contains(out, "wakegate: engine engine-0 ready after") || !strings.Contains(out, daggertest.Hello) {
		t.Fatalf("query through the gateway: want the engine woken and %q read back:\n%s", daggertest.Hello, out)
	}
	_, ns := daggertest.FindEngine(t, engineDir, 10*time.Second)

	script := "echo built by dagger > /built.txt; cat /built.txt"
	t.Log("withExec: a container from a busybox rootfs runs")
	out = call("exec 1", daggertest.ExecArgs(rootfs, script)...)
	if !daggertest.ExecRan(out) || !strings.Contains(out, "built by dagger") {
		t.Fatalf("first withExec did not run on an empty cache:\n%s", out)
	}
	afterCalls := gw.len()

	t.Log("waiting for the gateway's idle stop")
	_, stopAt := gw.waitFor(t, engineStoppedRE, afterCalls, 90*time.Second)
	daggertest.WaitNoLeftovers(t, engineDir, ns, 10*time.Second)
	if d := before.Diff(daggertest.Snapshot(t, engineDir)); len(d) > 0 {
		t.Fatalf("the stopped Dagger engine left the host changed:\n%s", strings.Join(d, "\n"))
	}
	log, err := os.ReadFile(filepath.Join(engineDir, "dagger.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "successfully marked clean shutdown"); n != 1 {
		t.Fatalf("Dagger recorded %d clean shutdowns at the idle stop, want 1:\n%s", n, tail(string(log), 4000))
	}

	t.Log("withExec again: wakes the engine; the cache survived the stop")
	out = call("exec 2", daggertest.ExecArgs(rootfs, script)...)
	if !daggertest.ExecCached(out) {
		t.Fatalf("withExec after the idle stop is not CACHED (the cache did not survive):\n%s", out)
	}
	gw.waitFor(t, engineReadyRE, stopAt, time.Second)
	if log, _ := os.ReadFile(filepath.Join(engineDir, "dagger.log")); regexp.MustCompile(`unclean|wiping`).Match(log) {
		t.Fatalf("Dagger found its cache marked unclean after the idle stop:\n%s", tail(string(log), 4000))
	}
	shutdownBegan = time.Now()
}
