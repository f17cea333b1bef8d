package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/engine/daggertest"
)

// daggerStopBound bounds a Dagger engine's whole stop in these tests: it
// exits about 16 s after SIGTERM.
const daggerStopBound = 90 * time.Second

// daggerCleanStops counts the graceful stops a Dagger engine's log records
// (the marker without which it wipes its cache at the next start).
func daggerCleanStops(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "dagger.log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "successfully marked clean shutdown")
}

func daggerLog(dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "dagger.log"))
	return string(b)
}

// waitStatus polls the engine's /status until ok accepts it.
func (h *engineHarness) waitStatus(what string, timeout time.Duration, ok func(Status) bool) Status {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	var last Status
	var err error
	for {
		if last, err = h.status(); err == nil && ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("engine status never showed %s within %s: last %+v, err %v", what, timeout, last, err)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

// waitDone waits for Run to return within timeout.
func (h *engineHarness) waitDone(timeout time.Duration) {
	h.t.Helper()
	select {
	case <-h.done:
	case <-time.After(timeout):
		h.t.Fatalf("engine did not stop within %s", timeout)
	}
}

// TestDaggerEngineIsIdleAwareAndItsCacheSurvivesAStopDuringACall runs a
// real Dagger engine behind the engine's front: /status says ready and idle,
// then busy while a call runs; a stop during that call lets it finish, stops
// Dagger cleanly and leaves nothing on the host; a new engine on the same
// state serves the call CACHED, stays up through a call longer than its idle
// bound, then exits by itself, cleanly again.
func TestDaggerEngineIsIdleAwareAndItsCacheSurvivesAStopDuringACall(t *testing.T) {
	bin := daggertest.Bin(t)
	daggertest.RequireHost(t)
	rootfs := daggertest.Rootfs(t)
	dir := shortDir(t)
	before := daggertest.Snapshot(t, dir)
	cfg := func(idle time.Duration) Config {
		return Config{Backend: Buildkitd{Kind: KindDagger, EngineBin: bin, Dir: dir}, Idle: idle,
			DrainTimeout: time.Minute, StopTimeout: time.Minute}
	}

	h := newHarness(t, dir)
	h.run(cfg(0))
	_, ns := daggertest.FindEngine(t, dir, 10*time.Second)
	front := h.bridge()

	s := h.waitStatus("ready and idle", 30*time.Second, func(s Status) bool { return s.Ready && s.Builds == 0 && s.Connections == 0 })
	if s.Engine != "dagger" || s.Error != "" {
		t.Fatalf("status of an idle Dagger engine = %+v, want engine dagger, no error", s)
	}
	if d := before.Diff(daggertest.Snapshot(t, dir)); len(d) > 0 {
		t.Fatalf("a running Dagger engine changed the host:\n%s", strings.Join(d, "\n"))
	}

	out, err := daggertest.Run(t, bin, front, daggertest.QueryArgs(t)...)
	if err != nil || !strings.Contains(out, daggertest.Hello) {
		t.Fatalf("query through the front: %v\n%s\nengine log:\n%s", err, out, daggerLog(dir))
	}

	// A call whose container sleeps: silent on the wire, busy all along.
	script := "echo slept; /bin/busybox sleep 6"
	type result struct {
		out string
		err error
	}
	call := make(chan result, 1)
	go func() {
		out, err := daggertest.Run(t, bin, front, daggertest.ExecArgs(rootfs, script)...)
		call <- result{out, err}
	}()
	busy := h.waitStatus("busy during the call", 30*time.Second, func(s Status) bool { return s.Ready && s.Builds > 0 })
	if busy.Connections == 0 {
		t.Errorf("status during a call = %+v, want its connections counted", busy)
	}

	began := time.Now()
	h.cancel() // what SIGTERM does to 'wakegate engine'
	var r result
	select {
	case r = <-call:
	case <-time.After(daggertest.CallTimeout + 10*time.Second):
		t.Fatal("the call running at the stop never ended")
	}
	if r.err != nil {
		t.Fatalf("the call running at the stop failed instead of finishing: %v\n%s", r.err, r.out)
	}
	if !daggertest.ExecRan(r.out) {
		t.Fatalf("the call's withExec did not run:\n%s", r.out)
	}
	h.waitDone(daggerStopBound)
	if h.err != nil {
		t.Fatalf("engine stop: %v\nengine log:\n%s", h.err, daggerLog(dir))
	}
	t.Logf("stop during a call took %s", time.Since(began).Round(time.Millisecond))
	if n := daggerCleanStops(t, dir); n != 1 {
		t.Fatalf("Dagger recorded %d clean shutdowns, want 1:\n%s", n, daggerLog(dir))
	}
	daggertest.WaitNoLeftovers(t, dir, ns, 10*time.Second)
	if d := before.Diff(daggertest.Snapshot(t, dir)); len(d) > 0 {
		t.Fatalf("the stopped Dagger engine left the host changed:\n%s", strings.Join(d, "\n"))
	}

	// Same state: the cache survived. Idle bound shorter than the next call.
	idle := 8 * time.Second
	h2 := newHarness(t, dir)
	h2.run(cfg(idle))
	_, ns = daggertest.FindEngine(t, dir, 10*time.Second)
	front = h2.bridge()
	// Dagger counts its cache at start (then every minute): the first
	// engine's work is on disk.
	if s := h2.waitStatus("ready and idle", 30*time.Second, func(s Status) bool { return s.Ready && s.Builds == 0 }); s.CacheBytes <= 0 {
		t.Errorf("status of a restarted Dagger engine reports cache_bytes %d, want Dagger's own count of the first engine's work", s.CacheBytes)
	}
	out, err = daggertest.Run(t, bin, front, daggertest.ExecArgs(rootfs, script)...)
	if err != nil || !daggertest.ExecCached(out) {
		t.Fatalf("the call after a restart is not CACHED (err %v):\n%s\nengine log:\n%s", err, out, daggerLog(dir))
	}
	if strings.Contains(daggerLog(dir), "unclean") {
		t.Fatalf("Dagger found its cache marked unclean:\n%s", daggerLog(dir))
	}
	out, err = daggertest.Run(t, bin, front, daggertest.ExecArgs(rootfs, "echo longer than idle; /bin/busybox sleep 10")...)
	if err != nil {
		t.Fatalf("a call longer than the idle bound failed (did the engine stop under it?): %v\n%s", err, out)
	}
	called := time.Now()
	h2.waitDone(30*time.Second + daggerStopBound)
	if h2.err != nil {
		t.Fatalf("idle exit: %v", h2.err)
	}
	if after := time.Since(called); after < idle {
		t.Fatalf("the engine exited %s after the call, before its %s idle bound", after, idle)
	}
	if n := daggerCleanStops(t, dir); n != 2 {
		t.Fatalf("Dagger recorded %d clean shutdowns, want 2:\n%s", n, daggerLog(dir))
	}
	daggertest.WaitNoLeftovers(t, dir, ns, 10*time.Second)
	if d := before.Diff(daggertest.Snapshot(t, dir)); len(d) > 0 {
		t.Fatalf("the idle-stopped Dagger engine left the host changed:\n%s", strings.Join(d, "\n"))
	}
}
