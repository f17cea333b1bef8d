package flytest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	fly "github.com/superfly/fly-go"
)

// fakeRunner records what the emulator asks of its runner; a test ends a
// process on its own with exit, and holds a stop with holdStops.
type fakeRunner struct {
	mu      sync.Mutex
	starts  map[string]int
	stops   map[string]int
	freezes map[string]int
	thaws   map[string]int
	procs   map[string]chan struct{}
	env     map[string]map[string]string // the environment each process started with
	hold    chan struct{}                // non-nil: Stop waits until it is closed
}

func newFakeRunner() *fakeRunner {
	return &fakeRunner{starts: map[string]int{}, stops: map[string]int{}, freezes: map[string]int{}, thaws: map[string]int{},
		procs: map[string]chan struct{}{}, env: map[string]map[string]string{}}
}

func (f *fakeRunner) Start(m *fly.Machine, _ string) (<-chan struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts[m.ID]++
	ch := make(chan struct{})
	f.procs[m.ID] = ch
	f.env[m.ID] = m.Config.Env
	return ch, nil
}

func (f *fakeRunner) Stop(m *fly.Machine) error {
	f.mu.Lock()
	hold := f.hold
	f.stops[m.ID]++
	f.mu.Unlock()
	if hold != nil {
		<-hold
	}
	f.exit(m.ID)
	return nil
}

func (f *fakeRunner) Freeze(m *fly.Machine) error { f.count(f.freezes, m.ID); return nil }
func (f *fakeRunner) Thaw(m *fly.Machine) error   { f.count(f.thaws, m.ID); return nil }

func (f *fakeRunner) count(c map[string]int, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c[id]++
}

func (f *fakeRunner) get(c map[string]int, id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return c[id]
}

func (f *fakeRunner) envOf(id string) map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.env[id]
}

// exit ends the machine's process.
func (f *fakeRunner) exit(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch, ok := f.procs[id]; ok {
		close(ch)
		delete(f.procs, id)
	}
}

func do(t *testing.T, srv *httptest.Server, method, path, nonce string, body any) *http.Response {
	t.Helper()
	var rd io.Reader = strings.NewReader("")
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL+"/v1/apps/a"+path, rd)
	req.Header.Set("Authorization", "Bearer x")
	if nonce != "" {
		req.Header.Set("fly-machine-lease-nonce", nonce)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// errorOf reads a refusal's message.
func errorOf(t *testing.T, resp *http.Response) string {
	t.Helper()
	var e struct{ Error string }
	json.NewDecoder(resp.Body).Decode(&e)
	return e.Error
}

// expect checks a response's status and, when msg is set, that its error
// says msg.
func expect(t *testing.T, what string, resp *http.Response, status int, msg string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s: %d %q, want %d", what, resp.StatusCode, errorOf(t, resp), status)
	}
	if msg != "" {
		if got := errorOf(t, resp); !strings.Contains(got, msg) {
			t.Fatalf("%s: error %q, want it to say %q", what, got, msg)
		}
	}
}

type world struct {
	em  *Emulator
	srv *httptest.Server
	run *fakeRunner
}

func newEmulator(t *testing.T, opts Options) *world {
	t.Helper()
	opts.Dir = t.TempDir()
	run := newFakeRunner()
	if opts.Runner == nil {
		opts.Runner = run
	}
	em := New(opts)
	srv := httptest.NewServer(em)
	t.Cleanup(func() { srv.Close(); em.Close() })
	return &world{em: em, srv: srv, run: run}
}

// machine creates a stopped machine with a volume and returns its id.
func (w *world) machine(t *testing.T) string {
	t.Helper()
	size := 1
	resp := do(t, w.srv, "POST", "/volumes", "", fly.CreateVolumeRequest{Name: "cache", Region: "ams", SizeGb: &size})
	var v fly.Volume
	json.NewDecoder(resp.Body).Decode(&v)
	if v.ID == "" {
		t.Fatalf("create volume: %d", resp.StatusCode)
	}
	resp = do(t, w.srv, "POST", "/machines", "", fly.LaunchMachineInput{SkipLaunch: true, Region: "ams",
		Config: &fly.MachineConfig{Image: "x", Env: map[string]string{"WAKEGATE_TOKEN": "first"},
			Mounts: []fly.MachineMount{{Volume: v.ID, Path: "/data"}}}})
	var m fly.Machine
	json.NewDecoder(resp.Body).Decode(&m)
	if m.ID == "" || m.State != "created" {
		t.Fatalf("create: %d %+v", resp.StatusCode, m)
	}
	return m.ID
}

// waitState long-polls the emulator until the machine is in state.
func (w *world) waitState(t *testing.T, id, state string) {
	t.Helper()
	resp := do(t, w.srv, "GET", "/machines/"+id+"/wait?state="+state+"&timeout=10", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("machine %s never reached %s: %d (it is %s)", id, state, resp.StatusCode, w.em.State("a", id))
	}
}

func (w *world) start(t *testing.T, id string) {
	t.Helper()
	expect(t, "start", do(t, w.srv, "POST", "/machines/"+id+"/start", "", nil), http.StatusOK, "")
	w.waitState(t, id, "started")
}

func update(env string) fly.LaunchMachineInput {
	return fly.LaunchMachineInput{SkipLaunch: true, Config: &fly.MachineConfig{Image: "x", Env: map[string]string{"WAKEGATE_TOKEN": env}}}
}

func TestRequestsWithoutATokenAreRefused(t *testing.T) {
	w := newEmulator(t, Options{})
	resp, err := http.Get(w.srv.URL + "/v1/apps/a/machines")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", resp.StatusCode)
	}
}

func TestWaitLongPollsThenTimesOutWith408(t *testing.T) {
	w := newEmulator(t, Options{})
	id := w.machine(t)
	began := time.Now()
	resp := do(t, w.srv, "GET", "/machines/"+id+"/wait?state=started&timeout=1", "", nil)
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("wait on a machine that never starts: %d, want 408", resp.StatusCode)
	}
	if took := time.Since(began); took < time.Second {
		t.Fatalf("wait returned after %s, before its 1s timeout", took)
	}
	w.start(t, id)
}

// An update is answered at once and leaves the machine replacing; start,
// stop and suspend are refused meanwhile as Fly refuses them, a second
// update conflicts, and a wait for "settled" ends when it is stopped again.
func TestAnUpdateLeavesTheMachineReplacingUntilItSettles(t *testing.T) {
	const delay = 1500 * time.Millisecond
	w := newEmulator(t, Options{UpdateDelay: delay})
	id := w.machine(t)
	began := time.Now()
	expect(t, "update", do(t, w.srv, "POST", "/machines/"+id, "", update("second")), http.StatusOK, "")
	if st := w.em.State("a", id); st != "replacing" {
		t.Fatalf("right after an update the machine is %s, want replacing", st)
	}
	expect(t, "start while replacing", do(t, w.srv, "POST", "/machines/"+id+"/start", "", nil),
		http.StatusPreconditionFailed, "unable to start machine from current state: 'replacing'")
	expect(t, "stop while replacing", do(t, w.srv, "POST", "/machines/"+id+"/stop", "", nil), http.StatusPreconditionFailed, "refusing to stop")
	expect(t, "suspend while replacing", do(t, w.srv, "POST", "/machines/"+id+"/suspend", "", nil), http.StatusPreconditionFailed, "refusing to suspend")
	expect(t, "second update", do(t, w.srv, "POST", "/machines/"+id, "", update("third")), http.StatusConflict, "concurrent update in progress")

	resp := do(t, w.srv, "GET", "/machines/"+id+"/wait?state=settled&timeout=10", "", nil)
	var settled struct{ State string }
	json.NewDecoder(resp.Body).Decode(&settled)
	if resp.StatusCode != http.StatusOK || settled.State != "created" {
		t.Fatalf("wait for settled: %d %q, want 200 and the state it had before (created)", resp.StatusCode, settled.State)
	}
	if took := time.Since(began); took < delay {
		t.Fatalf("the update settled after %s, before its %s", took, delay)
	}
	w.start(t, id)
	if got := w.run.envOf(id)["WAKEGATE_TOKEN"]; got != "second" {
		t.Fatalf("the machine started with token %q, want the update's", got)
	}
}

// A suspended machine cannot resume new code: an update discards its
// snapshot and leaves it stopped, and the next start boots a new process.
func TestAnUpdateDiscardsASuspendedMachinesSnapshot(t *testing.T) {
	w := newEmulator(t, Options{UpdateDelay: 200 * time.Millisecond})
	id := w.machine(t)
	w.start(t, id)
	expect(t, "suspend", do(t, w.srv, "POST", "/machines/"+id+"/suspend", "", nil), http.StatusOK, "")
	w.waitState(t, id, "suspended")
	expect(t, "update", do(t, w.srv, "POST", "/machines/"+id, "", update("second")), http.StatusOK, "")
	w.waitState(t, id, "stopped")
	if n := w.run.get(w.run.stops, id); n != 1 {
		t.Fatalf("the snapshot's process was ended %d times, want once", n)
	}
	w.start(t, id)
	if w.run.get(w.run.thaws, id) != 0 || w.run.get(w.run.starts, id) != 2 {
		t.Fatalf("after an update the start resumed the old snapshot (thaws %d, starts %d)", w.run.get(w.run.thaws, id), w.run.get(w.run.starts, id))
	}
}

// Suspend pauses the process; a start resumes that same process, with the
// environment it was started with, even from "suspending".
func TestSuspendFreezesAndAStartResumesTheSameProcess(t *testing.T) {
	for _, tc := range []struct {
		name  string
		early bool // start while still suspending
	}{{"from suspended", false}, {"from suspending", true}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newEmulator(t, Options{SuspendDelay: time.Second})
			id := w.machine(t)
			w.start(t, id)
			expect(t, "suspend", do(t, w.srv, "POST", "/machines/"+id+"/suspend", "", nil), http.StatusOK, "")
			if st := w.em.State("a", id); st != "suspending" {
				t.Fatalf("right after a suspend the machine is %s", st)
			}
			if n := w.run.get(w.run.freezes, id); n != 1 {
				t.Fatalf("the process was frozen %d times", n)
			}
			if !tc.early {
				w.waitState(t, id, "suspended")
			}
			w.start(t, id)
			if w.run.get(w.run.thaws, id) != 1 || w.run.get(w.run.starts, id) != 1 {
				t.Fatalf("resume: thaws %d, starts %d; want the old process thawed, none started", w.run.get(w.run.thaws, id), w.run.get(w.run.starts, id))
			}
			if got := w.run.envOf(id)["WAKEGATE_TOKEN"]; got != "first" {
				t.Fatalf("the resumed process has token %q", got)
			}
		})
	}
}

// A stop leaves the machine stopping until its process has exited (an
// engine draining builds); a start or an update meanwhile is refused.
func TestAStopLastsUntilTheProcessHasExited(t *testing.T) {
	w := newEmulator(t, Options{})
	id := w.machine(t)
	w.start(t, id)
	hold := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release) // a failed test must not leave Close waiting on the drain
	w.run.mu.Lock()
	w.run.hold = hold
	w.run.mu.Unlock()
	expect(t, "stop", do(t, w.srv, "POST", "/machines/"+id+"/stop", "", nil), http.StatusOK, "")
	resp := do(t, w.srv, "GET", "/machines/"+id+"/wait?state=stopped&timeout=1", "", nil)
	expect(t, "wait for stopped while draining", resp, http.StatusRequestTimeout, "")
	if st := w.em.State("a", id); st != "stopping" {
		t.Fatalf("while its process drains the machine is %s", st)
	}
	expect(t, "start while stopping", do(t, w.srv, "POST", "/machines/"+id+"/start", "", nil), http.StatusPreconditionFailed, "machine still active, refusing to start")
	expect(t, "update while stopping", do(t, w.srv, "POST", "/machines/"+id, "", update("x")), http.StatusPreconditionFailed, "stopping")
	release()
	w.waitState(t, id, "stopped")
}

// A process that ends on its own (idle exit, crash, OOM) leaves its
// machine stopped, with nobody asking.
func TestAMachineWhoseProcessExitsIsStopped(t *testing.T) {
	w := newEmulator(t, Options{})
	id := w.machine(t)
	w.start(t, id)
	w.run.exit(id)
	w.waitState(t, id, "stopped")
	if n := w.run.get(w.run.stops, id); n != 0 {
		t.Fatalf("a process that exited was stopped %d times", n)
	}
	w.start(t, id)
}

// Capacity is refused where Fly refuses it: 409 on an update, 412 on a
// start pinned by its volume, 403 when the organization is over quota.
func TestCapacityRefusalsComeWhereFlySendsThem(t *testing.T) {
	w := newEmulator(t, Options{})
	id := w.machine(t)
	w.em.NoCapacity("a", id, "insufficient memory available to fulfill request")
	expect(t, "update on a full host", do(t, w.srv, "POST", "/machines/"+id, "", update("x")), http.StatusConflict, "could not reserve resource for machine")
	expect(t, "start on a full host", do(t, w.srv, "POST", "/machines/"+id+"/start", "", nil), http.StatusPreconditionFailed, "insufficient resources")
	w.em.NoCapacity("a", id, "")
	w.em.OverQuota("a", "ams", true)
	expect(t, "start over quota", do(t, w.srv, "POST", "/machines/"+id+"/start", "", nil), http.StatusForbidden, "over the allowed quota")
	expect(t, "create over quota", do(t, w.srv, "POST", "/machines", "", fly.LaunchMachineInput{Region: "ams", Config: &fly.MachineConfig{Image: "x"}}),
		http.StatusForbidden, "over the allowed quota")
	w.em.OverQuota("a", "ams", false)
	w.start(t, id)
}

func TestLeaseConflictsAndStaleNoncesAre409AndARefreshKeepsTheNonce(t *testing.T) {
	w := newEmulator(t, Options{})
	id := w.machine(t)
	lease := func(nonce string) (int, *fly.MachineLeaseData) {
		resp := do(t, w.srv, "POST", "/machines/"+id+"/lease?ttl=1", nonce, nil)
		var l fly.MachineLease
		json.NewDecoder(resp.Body).Decode(&l)
		return resp.StatusCode, l.Data
	}
	code, l := lease("")
	if code != http.StatusOK || l == nil || l.Nonce == "" {
		t.Fatalf("acquire: %d %+v", code, l)
	}
	if code, _ := lease(""); code != http.StatusConflict {
		t.Fatalf("second acquire: %d, want 409", code)
	}
	expect(t, "start without the nonce", do(t, w.srv, "POST", "/machines/"+id+"/start", "", nil), http.StatusConflict, "lease currently held")
	code, r := lease(l.Nonce)
	if code != http.StatusOK || r == nil || r.Nonce != l.Nonce {
		t.Fatalf("refresh: %d %+v, want the same nonce %s", code, r, l.Nonce)
	}
	expect(t, "release", do(t, w.srv, "DELETE", "/machines/"+id+"/lease", l.Nonce, nil), http.StatusOK, "")
	expect(t, "start with a released nonce", do(t, w.srv, "POST", "/machines/"+id+"/start", l.Nonce, nil), http.StatusConflict, "no lease with that nonce")
	expect(t, "release again", do(t, w.srv, "DELETE", "/machines/"+id+"/lease", l.Nonce, nil), http.StatusNotFound, "lease not found")

	_, l = lease("")
	deadline := time.Now().Add(5 * time.Second)
	for { // the 1 s lease expires on its own
		code, _ := lease("")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an expired lease still excludes")
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
	expect(t, "start with an expired lease's nonce", do(t, w.srv, "POST", "/machines/"+id+"/start", l.Nonce, nil), http.StatusConflict, "")
}

// Every action is limited per machine, app-level calls per app, Get at
// its own higher rate; the 429 may come without Retry-After.
func TestRateLimitsCoverAppCallsAndGetHasItsOwn(t *testing.T) {
	w := newEmulator(t, Options{RatePerSecond: 0.01, Burst: 2, NoRetryAfter: true})
	id := w.machine(t) // one create_volume, one create
	codes := func(n int, method, path string) []int {
		var out []int
		for range n {
			resp := do(t, w.srv, method, path, "", nil)
			out = append(out, resp.StatusCode)
			if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "" {
				t.Fatal("429 with Retry-After though the emulator sends none")
			}
		}
		return out
	}
	if got := codes(3, "GET", "/machines"); got[0] != 200 || got[1] != 200 || got[2] != 429 {
		t.Fatalf("list: %v, want two allowed by the burst, then 429", got)
	}
	gets := codes(11, "GET", "/machines/"+id)
	for i, c := range gets[:10] {
		if c != 200 {
			t.Fatalf("get %d: %d, want Get's burst of 10 allowed", i, c)
		}
	}
	if gets[10] != 429 {
		t.Fatalf("11th get: %d, want 429", gets[10])
	}
	expect(t, "a third create in the app", do(t, w.srv, "POST", "/machines", "", fly.LaunchMachineInput{Config: &fly.MachineConfig{Image: "x"}}), http.StatusOK, "")
	expect(t, "a fourth create", do(t, w.srv, "POST", "/machines", "", fly.LaunchMachineInput{Config: &fly.MachineConfig{Image: "x"}}), http.StatusTooManyRequests, "")
}

// A fault can apply a request and still fail it: the ambiguous create.
func TestAFaultCanApplyARequestAndFailIt(t *testing.T) {
	w := newEmulator(t, Options{})
	w.em.Inject(Fault{Action: "create", Status: http.StatusGatewayTimeout, Apply: true})
	expect(t, "create", do(t, w.srv, "POST", "/machines", "", fly.LaunchMachineInput{Name: "m", Config: &fly.MachineConfig{Image: "x"}}), http.StatusGatewayTimeout, "")
	if ms := w.em.Machines("a"); len(ms) != 1 || ms[0].Name != "m" {
		t.Fatalf("the failed create left %d machines, want the one it applied", len(ms))
	}
}

func TestVolumesAreCheckedAndPlacedAsFlyDoes(t *testing.T) {
	w := newEmulator(t, Options{Zones: 3})
	create := func(req fly.CreateVolumeRequest) (*http.Response, fly.Volume) {
		if req.Region == "" {
			req.Region = "ams"
		}
		resp := do(t, w.srv, "POST", "/volumes", "", req)
		var v fly.Volume
		if resp.StatusCode == http.StatusOK {
			json.NewDecoder(resp.Body).Decode(&v)
		}
		return resp, v
	}
	big, yes, no := 600, true, false
	for _, tc := range []struct {
		req fly.CreateVolumeRequest
		msg string
	}{
		{fly.CreateVolumeRequest{Name: "wakegate-cache"}, "invalid volume name"},
		{fly.CreateVolumeRequest{Name: strings.Repeat("a", 31)}, "invalid volume name"},
		{fly.CreateVolumeRequest{Name: "Cache"}, "invalid volume name"},
		{fly.CreateVolumeRequest{Name: "cache", SizeGb: &big}, "1 to 500 GB"},
	} {
		resp, _ := create(tc.req)
		expect(t, "create volume "+tc.req.Name, resp, http.StatusBadRequest, tc.msg)
	}
	_, v := create(fly.CreateVolumeRequest{Name: "cache_0"})
	if !v.AutoBackupEnabled || v.SnapshotRetention != 5 {
		t.Fatalf("a new volume has daily snapshots %v kept %d days; Fly's default is on, 5 days", v.AutoBackupEnabled, v.SnapshotRetention)
	}
	// Different names with only require_unique_zone share a host...
	_, v1 := create(fly.CreateVolumeRequest{Name: "cache_1", RequireUniqueZone: &yes})
	if v1.Zone != v.Zone {
		t.Fatalf("volumes of different names were spread (%s, %s) without unique_zone_app_wide", v.Zone, v1.Zone)
	}
	// ...unique_zone_app_wide spreads them, until every host has one.
	_, v2 := create(fly.CreateVolumeRequest{Name: "cache_2", UniqueZoneAppWide: &yes})
	_, v3 := create(fly.CreateVolumeRequest{Name: "cache_3", UniqueZoneAppWide: &yes})
	if v2.Zone == v.Zone || v3.Zone == v.Zone || v2.Zone == v3.Zone {
		t.Fatalf("app-wide unique zones: %s, %s beside %s", v2.Zone, v3.Zone, v.Zone)
	}
	resp, _ := create(fly.CreateVolumeRequest{Name: "cache_4", UniqueZoneAppWide: &yes})
	expect(t, "a fourth unique zone of three", resp, http.StatusBadRequest, "no capacity")
	resp, _ = create(fly.CreateVolumeRequest{Name: "cache_4", RequireUniqueZone: &no})
	expect(t, "without unique zones", resp, http.StatusOK, "")
}
