package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wakegate/wakegate/internal/pgtest"
)

var engineStartedRE = regexp.MustCompile(`msg="engine process started" engine=engine-0 pid=(\d+)`)

// Two gateways on one machine, one database and one --state: local
// engines are started once, under a lease in the database, and the other
// gateway proxies to them; a gateway killed with SIGKILL takes its engine
// with it (nothing is left holding the state directory) and the other
// starts it again, on the same cache.
func TestTwoGatewaysShareLocalEnginesThroughTheDatabase(t *testing.T) {
	requireRoot(t)
	pg := pgtest.Start(t)
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	work := t.TempDir()
	caDir, creds := filepath.Join(work, "ca"), filepath.Join(work, "creds")
	mustRun(t, "certs", "init", "--dir", caDir, "--no-password")
	mustRun(t, "certs", "issue", "--dir", caDir, "--name", "ci", "--out", creds)
	state, err := os.MkdirTemp("", "wg-ha-") // short: engine sockets live here
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	buildkitd, buildctl := tool(t, "WAKEGATE_BUILDKITD", "buildkitd"), tool(t, "WAKEGATE_BUILDCTL", "buildctl")
	bctx := buildContext(t, staticBusybox(t))
	local := []string{"--provider", "local", "--state", state, "--buildkitd", buildkitd, "--idle", "60s"}
	gws := []*gwProc{
		haGateway(t, "A", copyCA(t, caDir), pg.DSN("wakegate"), local...),
		haGateway(t, "B", copyCA(t, caDir), pg.DSN("wakegate"), local...),
	}
	logs := func() string { return "gateway A:\n" + gws[0].logs.String() + "\ngateway B:\n" + gws[1].logs.String() }
	build := func(ctx context.Context, g *gwProc) (string, error) {
		out := newLogWatch()
		args := append([]string{"connect", "--gateway", g.addr, "--creds", creds, "--listen", "127.0.0.1:0", "--", buildctl}, buildctlArgs(bctx)...)
		err := run(ctx, args, out, out)
		return out.String(), err
	}

	var wg sync.WaitGroup
	errs, outs := make([]error, 2), make([]string, 2)
	for i, g := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = build(t.Context(), g)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("build through gateway %s: %v\n%s\n%s", gws[i].name, err, outs[i], logs())
		}
	}
	holder, other := -1, -1
	for i, g := range gws {
		switch n := len(engineStartedRE.FindAllString(g.logs.String(), -1)); {
		case n == 1 && holder < 0:
			holder = i
		case n == 0:
			other = i
		default:
			t.Fatalf("the engine was started %d times by gateway %s\n%s", n, g.name, logs())
		}
	}
	if holder < 0 || other < 0 {
		t.Fatalf("want the engine started by exactly one gateway\n%s", logs())
	}
	if out, err := build(t.Context(), gws[other]); err != nil || !runStepCached(t, out) {
		t.Fatalf("build through %s, which proxies to %s's engine, is not CACHED (%v):\n%s", gws[other].name, gws[holder].name, err, out)
	}

	// SIGKILL the holder: its engine goes with it, and the other gateway
	// starts the engine again, on the same cache.
	pid, _ := strconv.Atoi(engineStartedRE.FindStringSubmatch(gws[holder].logs.String())[1])
	gws[holder].cmd.Process.Kill()
	<-gws[holder].exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := syscall.Kill(pid, 0)
		stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if errors.Is(err, syscall.ESRCH) || strings.Contains(string(stat), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("engine process %d still runs 60s after its gateway was killed", pid)
		}
		time.Sleep(50 * time.Millisecond) // polling, bounded by the deadline
	}
	out, err := build(t.Context(), gws[other])
	if err != nil {
		t.Fatalf("build through %s after %s was killed: %v\n%s\n%s", gws[other].name, gws[holder].name, err, out, logs())
	}
	if !runStepCached(t, out) {
		t.Errorf("build after the takeover is not CACHED (the state directory is shared):\n%s", out)
	}
	if n := len(engineStartedRE.FindAllString(gws[other].logs.String(), -1)); n != 1 {
		t.Errorf("gateway %s started the engine %d times after the takeover, want 1\n%s", gws[other].name, n, logs())
	}
}
