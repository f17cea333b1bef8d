package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	flyapi "github.com/superfly/fly-go"

	"github.com/wakegate/wakegate/fly/flytest"
	"github.com/wakegate/wakegate/gateway"
)

// These end-to-end tests drive the Fly path for real: 'fly init' creates
// the pool through fly-go's flaps client against the emulator, whose
// started machines are 'wakegate engine' processes with real buildkitd on
// their own loopback addresses, and the gateway serves real builds. The
// emulator behaves as Fly does where that matters: updates settle in
// seconds, stops last as long as the engine takes to exit, rate limits
// answer bare 429s.

// flyEnv is one emulated Fly with a CA and a client's credentials.
type flyEnv struct {
	em                  *flytest.Emulator
	api                 *httptest.Server
	caDir, creds        string
	buildkitd, buildctl string
	bctx                string
}

// drainingRunner is EngineRunner with engines that take drain to begin
// their stop, as an engine finishing its builds does: the machine stays
// "stopping" that long.
type drainingRunner struct {
	*flytest.EngineRunner
	drain time.Duration
}

func (d drainingRunner) Stop(m *flyapi.Machine) error {
	if m.State == "started" {
		t := time.NewTimer(d.drain) // the emulated drain, not synchronisation
		<-t.C
	}
	return d.EngineRunner.Stop(m)
}

func newFlyEnv(t *testing.T, opts flytest.Options, drain time.Duration) *flyEnv {
	t.Helper()
	requireRoot(t)
	env := &flyEnv{buildkitd: tool(t, "WAKEGATE_BUILDKITD", "buildkitd"), buildctl: tool(t, "WAKEGATE_BUILDCTL", "buildctl")}
	env.bctx = buildContext(t, staticBusybox(t))
	t.Setenv("WAKEGATE_BUILDKITD", env.buildkitd) // the machines' engines find it here
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	vols, err := os.MkdirTemp("", "wg-fly-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(vols) })
	opts.Dir = vols
	var runner flytest.Runner = &flytest.EngineRunner{Bin: os.Getenv("WAKEGATE_BIN")}
	if drain > 0 {
		runner = drainingRunner{EngineRunner: runner.(*flytest.EngineRunner), drain: drain}
	}
	opts.Runner = runner
	env.em = flytest.New(opts)
	env.api = httptest.NewServer(env.em)
	t.Cleanup(func() { env.api.Close(); env.em.Close() })
	t.Setenv("FLY_FLAPS_BASE_URL", env.api.URL)
	t.Setenv("FLY_API_TOKEN", "emulator-token")
	env.caDir, env.creds = filepath.Join(t.TempDir(), "ca"), filepath.Join(t.TempDir(), "creds")
	mustRun(t, "certs", "init", "--dir", env.caDir, "--no-password")
	mustRun(t, "certs", "issue", "--dir", env.caDir, "--name", "ci", "--out", env.creds)
	return env
}

// gateway runs a gateway on the emulated Fly and returns its log and
// address.
func (env *flyEnv) gateway(t *testing.T, args ...string) (*logWatch, string) {
	t.Helper()
	gw := background(t, append([]string{"gateway", "--ca-dir", env.caDir, "--provider", "fly", "--fly-app", "ci-engines",
		"--listen", "127.0.0.1:0", "--admin", "", "--ca-listen", "127.0.0.1:0", "--wake-timeout", "90s"}, args...)...)
	m, _ := gw.waitFor(t, listeningRE, 0, 20*time.Second)
	return gw, m[1]
}

func (env *flyEnv) build(t *testing.T, name, gwAddr string, gw *logWatch) string {
	t.Helper()
	return buildThrough(t, name, gwAddr, env.creds, env.buildctl, env.bctx, gw)
}

// machineIDs are the pool's machines, by name.
func (env *flyEnv) machineIDs() map[string]string {
	ids := map[string]string{}
	for _, m := range env.em.Machines("ci-engines") {
		ids[m.Name] = m.ID
	}
	return ids
}

// homeOf is the engine the gateway routes a client to first.
func homeOf(t *testing.T, key string, ids map[string]string) string {
	t.Helper()
	var list []string
	for _, id := range ids {
		list = append(list, id)
	}
	pool, err := gateway.NewPool(t.Context(), listOnly(list), gateway.EngineConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	return pool.Route(key).ID()
}

// listOnly is a provider that only lists engines: enough to compute routes.
type listOnly []string

func (l listOnly) Engines(context.Context) ([]string, error)   { return l, nil }
func (listOnly) Start(context.Context, string) (string, error) { return "", nil }
func (listOnly) Stop(context.Context, string) error            { return nil }

// deadGatewayLease takes a machine's lease with ttl seconds and never gives
// it back, as a gateway killed holding it.
func (env *flyEnv) deadGatewayLease(t *testing.T, id string, ttl int) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost,
		env.api.URL+"/v1/apps/ci-engines/machines/"+id+"/lease?ttl="+strconv.Itoa(ttl), nil)
	req.Header.Set("Authorization", "Bearer other-gateway")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l flyapi.MachineLease
	if json.NewDecoder(resp.Body).Decode(&l); resp.StatusCode != http.StatusOK || l.Data == nil {
		t.Fatalf("take a lease as a dead gateway: %d", resp.StatusCode)
	}
}

// A build wakes a stopped machine through Fly as it behaves: the wake's
// update settles for seconds before the start, rate limits answer bare
// 429s, the client's home host refuses the update for capacity (the build
// goes to the other engine), an idle stop outlasts the gateway's wait (the
// engine drains: it stays billed as stopping, and the next build waits for
// the stop, then wakes it), a dead gateway's lease has to expire first;
// the build after a stop and a start is CACHED (the volume persisted).
func TestEndToEndThroughTheFlyEmulator(t *testing.T) {
	env := newFlyEnv(t, flytest.Options{StartDelay: 300 * time.Millisecond, StopDelay: 50 * time.Millisecond,
		UpdateDelay: 2 * time.Second, FirstAddr: 100, RatePerSecond: 1, Burst: 3, NoRetryAfter: true}, 4*time.Second)

	out := mustRun(t, "fly", "init", "--app", "ci-engines", "--region", "ams", "--engines", "2", "--volume-size", "1", "--image", "wakegate-engine", "--idle", "0")
	if strings.Count(out, "(created)") != 2 {
		t.Fatalf("fly init did not create 2 machines:\n%s", out)
	}
	if again := mustRun(t, "fly", "init", "--app", "ci-engines", "--region", "ams", "--engines", "2", "--volume-size", "1", "--image", "wakegate-engine"); strings.Contains(again, "(created)") {
		t.Fatalf("re-running fly init created more:\n%s", again)
	}
	ids := env.machineIDs()
	for _, m := range env.em.Machines("ci-engines") {
		if m.Config.StopConfig == nil || m.Config.StopConfig.Timeout.Duration != 300*time.Second {
			t.Fatalf("machine %s has stop config %+v, want a 300s kill timeout", m.Name, m.Config.StopConfig)
		}
	}
	home := homeOf(t, "ci", ids)
	var other string
	for _, id := range ids {
		if id != home {
			other = id
		}
	}
	env.em.NoCapacity("ci-engines", home, "insufficient memory available to fulfill request")
	env.em.Inject(flytest.Fault{Action: "start", Machine: other, Status: http.StatusTooManyRequests, Message: "rate limited"})

	gw, gwAddr := env.gateway(t, "--idle", "2s", "--fly-stop-wait", "1s")
	if !strings.Contains(gw.String(), "msg=\"gateway listening\"") || !regexp.MustCompile(`msg="gateway listening" \S+ engines=2 provider=fly`).MatchString(gw.String()) {
		t.Errorf("the gateway's listening line does not count the Fly pool's 2 machines:\n%s", gw)
	}
	if out := env.build(t, "build 1", gwAddr, gw); runStepCached(t, out) {
		t.Fatalf("first build is CACHED on an empty volume:\n%s", out)
	}
	gw.waitFor(t, regexp.MustCompile(`engine's host cannot take it; trying the next engine" [^\n]*engine=`+home), 0, 5*time.Second)
	if st := env.em.State("ci-engines", home); st != "created" {
		t.Fatalf("the full host's machine is %s", st)
	}

	// The idle stop: the engine drains longer than the gateway waits.
	mark := gw.len()
	gw.waitFor(t, regexp.MustCompile(`msg="engine still stopping on its host; waiting again" engine=`+other), mark, 30*time.Second)
	if out := env.build(t, "build 2 (during the drain)", gwAddr, gw); !runStepCached(t, out) {
		t.Fatalf("build after a stop and a start is not CACHED (the volume did not persist):\n%s", out)
	}
	gw.waitFor(t, regexp.MustCompile(`msg="engine stopped" engine=`+other), mark, 30*time.Second)
	if strings.Contains(gw.String(), "refusing to start") {
		t.Fatalf("the gateway started a machine that was still stopping:\n%s", gw)
	}

	// Capacity returns; a gateway that died holding the home machine's
	// lease makes the next wake wait for that lease to expire.
	env.em.NoCapacity("ci-engines", home, "")
	gw.waitFor(t, regexp.MustCompile(`msg="engine stopped" engine=`+other), mark, 60*time.Second)
	env.deadGatewayLease(t, home, 3)
	env.build(t, "build 3 (home, after a dead gateway's lease)", gwAddr, gw)
	if st := env.em.State("ci-engines", home); st != "started" {
		t.Fatalf("after a build on its home engine the machine is %s", st)
	}
	for _, bad := range []string{"machine marked unhealthy\" machine=" + other, "unable to start machine from current state"} {
		if strings.Contains(gw.String(), bad) {
			t.Fatalf("gateway log says %q:\n%s", bad, gw)
		}
	}
}

// An engine that exits by itself (its own idle stop) leaves its machine
// stopped; the next build finds it gone and wakes it again.
func TestEndToEndFlyEngineThatExitsByItselfIsWokenAgain(t *testing.T) {
	env := newFlyEnv(t, flytest.Options{StartDelay: 300 * time.Millisecond, UpdateDelay: time.Second, FirstAddr: 110}, 0)
	mustRun(t, "fly", "init", "--app", "ci-engines", "--region", "ams", "--engines", "1", "--volume-size", "1", "--image", "wakegate-engine", "--idle", "3s")
	id := env.machineIDs()["wakegate-engine-0"]
	gw, gwAddr := env.gateway(t, "--idle", "10m")
	env.build(t, "build 1", gwAddr, gw)
	deadline := time.Now().Add(60 * time.Second)
	for env.em.State("ci-engines", id) != "stopped" { // the engine's own idle exit
		if time.Now().After(deadline) {
			t.Fatalf("the engine never exited by itself: machine %s", env.em.State("ci-engines", id))
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
	if out := env.build(t, "build 2", gwAddr, gw); !runStepCached(t, out) {
		t.Fatalf("build after the engine's own exit is not CACHED:\n%s", out)
	}
	if n := env.em.Calls("start"); n != 2 {
		t.Fatalf("start requests = %d, want 2", n)
	}
}

// With --fly-suspend (machines sized by 'fly init --suspend') an idle
// engine is suspended and the next build resumes the same engine process:
// no update (it would discard the snapshot), no new enrolment.
func TestEndToEndFlySuspendResumesTheSameEngine(t *testing.T) {
	env := newFlyEnv(t, flytest.Options{StartDelay: 300 * time.Millisecond, UpdateDelay: time.Second,
		SuspendDelay: 500 * time.Millisecond, FirstAddr: 120}, 0)
	mustRun(t, "fly", "init", "--app", "ci-engines", "--region", "ams", "--engines", "1", "--volume-size", "1", "--image", "wakegate-engine", "--idle", "0", "--suspend")
	id := env.machineIDs()["wakegate-engine-0"]
	if g := env.em.Machines("ci-engines")[0].Config.Guest; g == nil || g.MemoryMB > 2048 {
		t.Fatalf("fly init --suspend made a machine of %+v, more than Fly suspends", g)
	}
	gw, gwAddr := env.gateway(t, "--idle", "2s", "--fly-suspend")
	env.build(t, "build 1", gwAddr, gw)
	gw.waitFor(t, regexp.MustCompile(`msg="engine stopped" engine=`+id), 0, 30*time.Second)
	if st := env.em.State("ci-engines", id); st != "suspended" {
		t.Fatalf("after the idle period the machine is %s, want suspended", st)
	}
	updates := env.em.Calls("update")
	if out := env.build(t, "build 2 (resumed)", gwAddr, gw); !runStepCached(t, out) {
		t.Fatalf("build on the resumed engine is not CACHED:\n%s", out)
	}
	if n := env.em.Calls("update"); n != updates {
		t.Fatalf("the resume sent %d updates: an update discards the snapshot", n-updates)
	}
	gw.waitFor(t, regexp.MustCompile(`msg="resuming suspended machine" machine=`+id), 0, time.Second)
}
