package flytest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	fly "github.com/superfly/fly-go"
)

// Runner runs the process of a started machine.
type Runner interface {
	// Start launches the machine's process — Fly's "started" means booted,
	// not ready — and returns a channel closed when that process ends, on
	// its own (an idle exit, a crash, the OOM killer) or through Stop.
	Start(m *fly.Machine, volumeDir string) (exited <-chan struct{}, err error)
	// Stop sends the machine's stop signal and returns once the process
	// has ended: it waits up to the machine's kill timeout, then kills it.
	// A frozen process (a suspended machine's snapshot) is killed at once.
	Stop(m *fly.Machine) error
	// Freeze pauses the process where it is (suspend); Thaw lets it run
	// on (a start from suspended resumes the same process, with the
	// environment it was started with).
	Freeze(m *fly.Machine) error
	Thaw(m *fly.Machine) error
}

// Options tune the emulator's realism. Its delays are its own simulated
// behaviour: Fly's are seconds, tests keep them short.
type Options struct {
	// StartDelay is how long a machine spends starting before its runner
	// is called (Fly: a few hundred ms); StopDelay how long it stays
	// stopping after its process has exited.
	StartDelay, StopDelay time.Duration
	// UpdateDelay is how long an update keeps the machine replacing
	// before it settles (Fly: seconds, longer when the image is pulled).
	UpdateDelay time.Duration
	// SuspendDelay is how long a machine spends suspending (Fly: the
	// snapshot of its memory is written).
	SuspendDelay time.Duration
	// Dir holds the volumes' directories.
	Dir string
	// Runner runs started machines (nil: nothing runs).
	Runner Runner
	// FirstAddr is the last octet of the first private address handed
	// out (127.0.0.FirstAddr); default 2. Emulators running side by side
	// use different ranges.
	FirstAddr int
	// RatePerSecond and Burst limit each action per machine (per app for
	// app-level calls: list, create, volumes); zero disables every limit.
	// Fly: 1/s with a burst of 3. GetRatePerSecond and GetBurst limit
	// Get Machine (Fly: 5/s, burst 10; the defaults when zero).
	RatePerSecond    float64
	Burst            int
	GetRatePerSecond float64
	GetBurst         int
	// NoRetryAfter answers rate-limited requests with a bare 429, as Fly
	// may: clients must back off on their own.
	NoRetryAfter bool
	// Zones is how many hosts ("zones") each region has for volumes;
	// default 4.
	Zones int
	// MaxWait caps one /wait long poll, as Fly caps it at 60 s (the
	// default); tests lower it to exercise waits longer than the cap.
	MaxWait time.Duration
	Log     *slog.Logger
}

// Emulator is an in-memory Machines API.
type Emulator struct {
	opts Options
	mux  *http.ServeMux
	done chan struct{} // closed by Close: delayed transitions give up
	wg   sync.WaitGroup

	mu       sync.Mutex // guards everything below, and every machine and volume
	apps     map[string]*app
	nextIP   int
	faults   []*Fault
	buckets  map[string]*bucket
	calls    map[string]int // action → count, for tests
	changed  *sync.Cond     // broadcast on every machine state change
	shutdown bool
}

type app struct {
	machines map[string]*machine
	volumes  map[string]*volume
	// overQuota maps a region to the organization's quota refusal there.
	overQuota map[string]string
}

// New returns an emulator with no apps.
func New(opts Options) *Emulator {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.FirstAddr < 2 || opts.FirstAddr > 254 {
		opts.FirstAddr = 2
	}
	if opts.RatePerSecond > 0 && opts.GetRatePerSecond <= 0 {
		opts.GetRatePerSecond, opts.GetBurst = 5, 10
	}
	if opts.Zones <= 0 {
		opts.Zones = 4
	}
	if opts.MaxWait <= 0 || opts.MaxWait > time.Minute {
		opts.MaxWait = time.Minute
	}
	e := &Emulator{opts: opts, apps: map[string]*app{}, nextIP: opts.FirstAddr, buckets: map[string]*bucket{},
		calls: map[string]int{}, done: make(chan struct{})}
	e.changed = sync.NewCond(&e.mu)
	e.mux = http.NewServeMux()
	p := "/v1/apps/{app}"
	e.mux.HandleFunc("GET "+p+"/machines", e.auth("list", e.listMachines))
	e.mux.HandleFunc("POST "+p+"/machines", e.auth("create", e.createMachine))
	e.mux.HandleFunc("GET "+p+"/machines/{id}", e.auth("get", e.getMachine))
	e.mux.HandleFunc("POST "+p+"/machines/{id}", e.auth("update", e.updateMachine))
	e.mux.HandleFunc("POST "+p+"/machines/{id}/start", e.auth("start", e.startMachine))
	e.mux.HandleFunc("POST "+p+"/machines/{id}/stop", e.auth("stop", e.stopMachine))
	e.mux.HandleFunc("POST "+p+"/machines/{id}/suspend", e.auth("suspend", e.suspendMachine))
	e.mux.HandleFunc("GET "+p+"/machines/{id}/wait", e.auth("wait", e.waitMachine))
	e.mux.HandleFunc("POST "+p+"/machines/{id}/lease", e.auth("lease", e.acquireLease))
	e.mux.HandleFunc("DELETE "+p+"/machines/{id}/lease", e.auth("release", e.releaseLease))
	e.mux.HandleFunc("GET "+p+"/volumes", e.auth("volumes", e.listVolumes))
	e.mux.HandleFunc("POST "+p+"/volumes", e.auth("create_volume", e.createVolume))
	return e
}

// ServeHTTP serves the API.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) { e.mux.ServeHTTP(w, r) }

// Calls says how many requests an action received (e.g. "start").
func (e *Emulator) Calls(action string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[action]
}

// Close ends every machine's process (a frozen one at once) and waits for
// the emulator's own goroutines.
func (e *Emulator) Close() {
	e.mu.Lock()
	if e.shutdown {
		e.mu.Unlock()
		e.wg.Wait()
		return
	}
	e.shutdown = true
	close(e.done)
	var procs []*fly.Machine
	for _, a := range e.apps {
		for _, m := range a.machines {
			if m.exited != nil {
				procs = append(procs, m.copyLocked())
				m.exited, m.frozen = nil, false
			}
		}
	}
	e.changed.Broadcast()
	e.mu.Unlock()
	if e.opts.Runner != nil {
		for _, m := range procs {
			e.opts.Runner.Stop(m)
		}
	}
	e.wg.Wait()
}

// later runs f after d on a goroutine Close waits for, unless Close comes
// first. The delay is the emulated platform's, not synchronisation.
// Called with e.mu held.
func (e *Emulator) laterLocked(d time.Duration, f func()) {
	if e.shutdown {
		return
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-e.done:
				return
			}
		}
		f()
	}()
}

// auth checks the token, counts the call, applies faults and rate limits.
func (e *Emulator) auth(action string, h func(http.ResponseWriter, *http.Request, *app)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok := r.Header.Get("Authorization"); tok == "" {
			apiError(w, http.StatusUnauthorized, "missing token: set FLY_API_TOKEN")
			return
		}
		id := r.PathValue("id")
		e.mu.Lock()
		e.calls[action]++
		f := e.takeFault(action, id)
		limited := !e.allowLocked(action, r.PathValue("app"), id)
		e.mu.Unlock()
		if f != nil {
			if f.Hang > 0 {
				select {
				case <-time.After(f.Hang):
				case <-r.Context().Done():
					return
				}
			}
			if f.Status != 0 {
				if f.Apply {
					// The request takes effect; only its answer is lost
					// (a 5xx or a timeout after the work was done).
					e.serve(httptest.NewRecorder(), r, h)
				}
				if f.RetryAfter > 0 {
					w.Header().Set("Retry-After", strconv.Itoa(int(f.RetryAfter.Seconds())))
				}
				apiError(w, f.Status, f.Message)
				return
			}
		}
		if limited {
			// Fly limits each action per machine (per app for app-level
			// calls): https://fly.io/docs/machines/api/working-with-machines-api/#rate-limits
			if !e.opts.NoRetryAfter {
				w.Header().Set("Retry-After", "1")
			}
			apiError(w, http.StatusTooManyRequests, "rate limit exceeded")
			return
		}
		e.serve(w, r, h)
	}
}

func (e *Emulator) serve(w http.ResponseWriter, r *http.Request, h func(http.ResponseWriter, *http.Request, *app)) {
	e.mu.Lock()
	a := e.appLocked(r.PathValue("app"))
	e.mu.Unlock()
	h(w, r, a)
}

func (e *Emulator) appLocked(name string) *app {
	a, ok := e.apps[name]
	if !ok {
		a = &app{machines: map[string]*machine{}, volumes: map[string]*volume{}, overQuota: map[string]string{}}
		e.apps[name] = a
	}
	return a
}

// apiError answers as flaps reads errors: {"error": "..."}.
func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func newID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// nextAddrLocked hands out a private address: 127.0.0.2, .3, …
func (e *Emulator) nextAddrLocked() string {
	ip := fmt.Sprintf("127.0.0.%d", e.nextIP)
	if e.nextIP++; e.nextIP > 254 {
		e.nextIP = e.opts.FirstAddr
	}
	return ip
}

func (e *Emulator) volumeDir(id string) string { return filepath.Join(e.opts.Dir, id) }

// State returns a machine's state.
func (e *Emulator) State(appName, id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.appLocked(appName).machines[id]; ok {
		return m.m.State
	}
	return ""
}

// Machines lists an app's machines (copies).
func (e *Emulator) Machines(appName string) []fly.Machine {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []fly.Machine
	for _, m := range e.appLocked(appName).machines {
		out = append(out, *m.copyLocked())
	}
	return out
}

// Migrate moves a machine to a "new host": it keeps its id and gets a new
// private address, and a suspended machine loses its snapshot, as on Fly
// (https://fly.io/docs/reference/suspend-resume/#snapshot-behavior-with-suspend).
func (e *Emulator) Migrate(appName, id string) {
	e.mu.Lock()
	m, ok := e.appLocked(appName).machines[id]
	if !ok {
		e.mu.Unlock()
		return
	}
	m.m.PrivateIP = e.nextAddrLocked()
	var snapshot *fly.Machine
	if m.frozen {
		snapshot = m.copyLocked()
		m.exited, m.frozen = nil, false
	}
	e.mu.Unlock()
	if snapshot != nil && e.opts.Runner != nil {
		e.opts.Runner.Stop(snapshot)
	}
}

// NoCapacity makes the host of a machine refuse it, with reason, until
// called again with "": an update is answered 409 and a start (the volume
// pins the machine to that host) 412, as Fly answers.
func (e *Emulator) NoCapacity(appName, id, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.appLocked(appName).machines[id]; ok {
		m.noCap = reason
	}
}

// OverQuota makes the organization refuse, with a 403, to create, update
// or start the app's machines in region (on=false lifts it), as Fly does
// when an organization is over its quota in a region.
func (e *Emulator) OverQuota(appName, region string, on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.appLocked(appName)
	if on {
		a.overQuota[region] = fmt.Sprintf("organization %q is using 1970176 MB of memory in %s which is over the allowed quota. please consider other regions", appName, region)
	} else {
		delete(a.overQuota, region)
	}
}
