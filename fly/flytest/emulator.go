package flytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	fly "github.com/superfly/fly-go"
)

// Runner runs a started machine. Start returns once the machine's process
// runs; Stop returns once it has exited.
type Runner interface {
	Start(m *fly.Machine, volumeDir string) error
	Stop(m *fly.Machine) error
}

// Options tune the emulator's realism.
type Options struct {
	// StartDelay and StopDelay are how long a machine spends starting and
	// stopping before its runner is called (Fly: a few hundred ms).
	StartDelay, StopDelay time.Duration
	// Dir holds the volumes' directories.
	Dir string
	// Runner runs started machines (nil: nothing runs).
	Runner Runner
	// FirstAddr is the last octet of the first private address handed
	// out (127.0.0.FirstAddr); default 2. Emulators running side by side
	// use different ranges.
	FirstAddr int
	// RatePerSecond and Burst limit each (action, machine) pair; zero
	// disables the limit. Fly: about 1/s with a burst of 3.
	RatePerSecond float64
	Burst         int
	Log           *slog.Logger
}

// Emulator is an in-memory Machines API.
type Emulator struct {
	opts Options
	mux  *http.ServeMux

	mu       sync.Mutex // guards everything below
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
	volumes  map[string]*fly.Volume
}

type machine struct {
	m         *fly.Machine
	lease     *fly.MachineLeaseData
	noCapReas string // non-empty: the host cannot take it (capacity)
}

// New returns an emulator with no apps.
func New(opts Options) *Emulator {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.FirstAddr < 2 || opts.FirstAddr > 254 {
		opts.FirstAddr = 2
	}
	e := &Emulator{opts: opts, apps: map[string]*app{}, nextIP: opts.FirstAddr, buckets: map[string]*bucket{}, calls: map[string]int{}}
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

// Close stops every running machine's process.
func (e *Emulator) Close() {
	e.mu.Lock()
	e.shutdown = true
	var running []*fly.Machine
	for _, a := range e.apps {
		for _, m := range a.machines {
			if m.m.State == "started" || m.m.State == "starting" {
				running = append(running, m.m)
			}
		}
	}
	e.changed.Broadcast()
	e.mu.Unlock()
	if e.opts.Runner != nil {
		for _, m := range running {
			e.opts.Runner.Stop(m)
		}
	}
}

// auth checks the token, counts the call, applies rate limits and faults.
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
		limited := !e.allow(action, id)
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
				if f.RetryAfter > 0 {
					w.Header().Set("Retry-After", strconv.Itoa(int(f.RetryAfter.Seconds())))
				}
				apiError(w, f.Status, f.Message)
				return
			}
		}
		if limited {
			w.Header().Set("Retry-After", "1")
			apiError(w, http.StatusTooManyRequests, "rate limit exceeded")
			return
		}
		e.mu.Lock()
		a := e.appLocked(r.PathValue("app"))
		e.mu.Unlock()
		h(w, r, a)
	}
}

func (e *Emulator) appLocked(name string) *app {
	a, ok := e.apps[name]
	if !ok {
		a = &app{machines: map[string]*machine{}, volumes: map[string]*fly.Volume{}}
		e.apps[name] = a
	}
	return a
}

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

// Migrate moves a machine to a "new host": it keeps its id and gets a new
// private address, as on Fly.
func (e *Emulator) Migrate(appName, id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.appLocked(appName).machines[id]; ok {
		m.m.PrivateIP = e.nextAddrLocked()
	}
}

// NoCapacity makes the host of a machine refuse to start it, with reason,
// until called again with "".
func (e *Emulator) NoCapacity(appName, id, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.appLocked(appName).machines[id]; ok {
		m.noCapReas = reason
	}
}

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
		out = append(out, *m.m)
	}
	return out
}

func (e *Emulator) volumeDir(id string) string { return filepath.Join(e.opts.Dir, id) }

func (e *Emulator) listVolumes(w http.ResponseWriter, r *http.Request, a *app) {
	e.mu.Lock()
	out := []fly.Volume{}
	for _, v := range a.volumes {
		out = append(out, *v)
	}
	e.mu.Unlock()
	writeJSON(w, out)
}

func (e *Emulator) createVolume(w http.ResponseWriter, r *http.Request, a *app) {
	var req fly.CreateVolumeRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Name == "" {
		apiError(w, http.StatusBadRequest, "a volume needs a name")
		return
	}
	size := 1
	if req.SizeGb != nil {
		size = *req.SizeGb
	}
	v := &fly.Volume{ID: "vol_" + newID(8), Name: req.Name, State: "created", SizeGb: size, Region: req.Region, CreatedAt: time.Now()}
	if err := os.MkdirAll(e.volumeDir(v.ID), 0o700); err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	e.mu.Lock()
	a.volumes[v.ID] = v
	e.mu.Unlock()
	writeJSON(w, v)
}

// withMachine runs f with the machine locked in, or answers 404.
func (e *Emulator) withMachine(w http.ResponseWriter, r *http.Request, a *app, f func(m *machine)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ok := a.machines[r.PathValue("id")]
	if !ok {
		apiError(w, http.StatusNotFound, "machine not found")
		return
	}
	f(m)
}

func (e *Emulator) listMachines(w http.ResponseWriter, r *http.Request, a *app) {
	e.mu.Lock()
	out := []*fly.Machine{}
	for _, m := range a.machines {
		c := *m.m
		out = append(out, &c)
	}
	e.mu.Unlock()
	writeJSON(w, out)
}

func (e *Emulator) getMachine(w http.ResponseWriter, r *http.Request, a *app) {
	e.withMachine(w, r, a, func(m *machine) {
		c := *m.m
		writeJSON(w, &c)
	})
}

func (e *Emulator) createMachine(w http.ResponseWriter, r *http.Request, a *app) {
	var in fly.LaunchMachineInput
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Config == nil {
		apiError(w, http.StatusBadRequest, "a machine needs a config")
		return
	}
	e.mu.Lock()
	for _, mt := range in.Config.Mounts {
		v, ok := a.volumes[mt.Volume]
		if !ok {
			e.mu.Unlock()
			apiError(w, http.StatusNotFound, "volume "+mt.Volume+" not found")
			return
		}
		if v.AttachedMachine != nil {
			e.mu.Unlock()
			apiError(w, http.StatusPreconditionFailed, "volume "+mt.Volume+" is attached to another machine")
			return
		}
	}
	m := &fly.Machine{ID: newID(7), Name: in.Name, Region: in.Region, State: "created", Config: in.Config,
		PrivateIP: e.nextAddrLocked(), CreatedAt: time.Now().UTC().Format(time.RFC3339)}
	for _, mt := range in.Config.Mounts {
		id := m.ID
		a.volumes[mt.Volume].AttachedMachine = &id
	}
	a.machines[m.ID] = &machine{m: m}
	c := *m
	e.mu.Unlock()
	if !in.SkipLaunch {
		e.beginStart(a, m.ID)
	}
	writeJSON(w, &c)
}

func (e *Emulator) updateMachine(w http.ResponseWriter, r *http.Request, a *app) {
	var in fly.LaunchMachineInput
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Config == nil {
		apiError(w, http.StatusBadRequest, "an update needs a config")
		return
	}
	e.withMachine(w, r, a, func(m *machine) {
		if !e.leaseOK(w, r, m) {
			return
		}
		m.m.Config = in.Config
		c := *m.m
		writeJSON(w, &c)
	})
}

// leaseOK enforces a held lease: mutations need its nonce.
func (e *Emulator) leaseOK(w http.ResponseWriter, r *http.Request, m *machine) bool {
	if m.lease == nil || time.Now().Unix() >= m.lease.ExpiresAt {
		m.lease = nil
		return true
	}
	if r.Header.Get("fly-machine-lease-nonce") == m.lease.Nonce {
		return true
	}
	apiError(w, http.StatusPreconditionFailed, "machine is leased by another client")
	return false
}

func (e *Emulator) startMachine(w http.ResponseWriter, r *http.Request, a *app) {
	var prev string
	ok := false
	e.withMachine(w, r, a, func(m *machine) {
		if !e.leaseOK(w, r, m) {
			return
		}
		if m.noCapReas != "" {
			apiError(w, http.StatusPreconditionFailed, "could not reserve resource for machine: "+m.noCapReas)
			return
		}
		prev = m.m.State
		switch prev {
		case "stopped", "suspended", "created":
			m.m.State = "starting"
			e.changed.Broadcast()
			ok = true
		case "started", "starting":
			writeJSON(w, fly.MachineStartResponse{Status: "success", PreviousState: prev})
		default:
			apiError(w, http.StatusPreconditionFailed, "machine is "+prev+"; cannot start")
		}
	})
	if !ok {
		return
	}
	go e.finishStart(a, r.PathValue("id"))
	writeJSON(w, fly.MachineStartResponse{Status: "success", PreviousState: prev})
}

func (e *Emulator) beginStart(a *app, id string) {
	e.mu.Lock()
	a.machines[id].m.State = "starting"
	e.changed.Broadcast()
	e.mu.Unlock()
	go e.finishStart(a, id)
}

// finishStart plays the starting → started transition and runs the
// machine; a runner that fails leaves the machine stopped (Fly: failed).
func (e *Emulator) finishStart(a *app, id string) {
	time.Sleep(e.opts.StartDelay) // the emulated boot time, not synchronisation
	e.mu.Lock()
	m := a.machines[id]
	if m.m.State != "starting" || e.shutdown {
		e.mu.Unlock()
		return
	}
	c := *m.m
	dir := ""
	for _, mt := range c.Config.Mounts {
		dir = e.volumeDir(mt.Volume)
	}
	e.mu.Unlock()
	var err error
	if e.opts.Runner != nil {
		err = e.opts.Runner.Start(&c, dir)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		e.opts.Log.Error("emulated machine failed to start", "machine", id, "err", err)
		m.m.State = "stopped"
	} else {
		m.m.State = "started"
	}
	e.changed.Broadcast()
}

func (e *Emulator) stopMachine(w http.ResponseWriter, r *http.Request, a *app) {
	e.transition(w, r, a, "stopping", "stopped")
}

func (e *Emulator) suspendMachine(w http.ResponseWriter, r *http.Request, a *app) {
	e.transition(w, r, a, "suspending", "suspended")
}

// transition moves a started machine through via to final, stopping its
// process.
func (e *Emulator) transition(w http.ResponseWriter, r *http.Request, a *app, via, final string) {
	ok := false
	e.withMachine(w, r, a, func(m *machine) {
		if !e.leaseOK(w, r, m) {
			return
		}
		switch m.m.State {
		case "started", "starting":
			m.m.State = via
			e.changed.Broadcast()
			ok = true
		case "stopped", "suspended", final:
			w.WriteHeader(http.StatusOK)
		default:
			apiError(w, http.StatusPreconditionFailed, "machine is "+m.m.State)
		}
	})
	if !ok {
		return
	}
	id := r.PathValue("id")
	go func() {
		e.mu.Lock()
		c := *a.machines[id].m
		e.mu.Unlock()
		if e.opts.Runner != nil {
			if err := e.opts.Runner.Stop(&c); err != nil {
				e.opts.Log.Error("emulated machine stop", "machine", id, "err", err)
			}
		}
		time.Sleep(e.opts.StopDelay) // the emulated shutdown time
		e.mu.Lock()
		a.machines[id].m.State = final
		e.changed.Broadcast()
		e.mu.Unlock()
	}()
	w.WriteHeader(http.StatusOK)
}

// waitMachine long-polls until the machine is in one of the states asked
// for, or the timeout (1–60 s) passes: 408, as Fly answers.
func (e *Emulator) waitMachine(w http.ResponseWriter, r *http.Request, a *app) {
	states := r.URL.Query()["state"]
	if len(states) == 0 {
		states = []string{"started"}
	}
	secs, _ := strconv.Atoi(r.URL.Query().Get("timeout"))
	secs = min(max(secs, 1), 60)
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	timer := time.AfterFunc(time.Until(deadline), func() {
		e.mu.Lock()
		e.changed.Broadcast()
		e.mu.Unlock()
	})
	defer timer.Stop()
	stop := context.AfterFunc(r.Context(), func() {
		e.mu.Lock()
		e.changed.Broadcast()
		e.mu.Unlock()
	})
	defer stop()
	id := r.PathValue("id")
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		m, ok := a.machines[id]
		if !ok {
			apiError(w, http.StatusNotFound, "machine not found")
			return
		}
		for _, s := range states {
			if m.m.State == s {
				writeJSON(w, map[string]bool{"ok": true})
				return
			}
		}
		if time.Now().After(deadline) || r.Context().Err() != nil || e.shutdown {
			apiError(w, http.StatusRequestTimeout, "deadline exceeded waiting for machine to be "+strings.Join(states, ","))
			return
		}
		e.changed.Wait()
	}
}

func (e *Emulator) acquireLease(w http.ResponseWriter, r *http.Request, a *app) {
	ttl, _ := strconv.Atoi(r.URL.Query().Get("ttl"))
	if ttl <= 0 {
		ttl = 30
	}
	e.withMachine(w, r, a, func(m *machine) {
		now := time.Now()
		if m.lease != nil && now.Unix() < m.lease.ExpiresAt {
			if r.Header.Get("fly-machine-lease-nonce") != m.lease.Nonce {
				apiError(w, http.StatusConflict, "machine already has an active lease")
				return
			}
		}
		m.lease = &fly.MachineLeaseData{Nonce: newID(8), ExpiresAt: now.Add(time.Duration(ttl) * time.Second).Unix(), Owner: "wakegate"}
		writeJSON(w, fly.MachineLease{Status: "success", Data: m.lease})
	})
}

func (e *Emulator) releaseLease(w http.ResponseWriter, r *http.Request, a *app) {
	e.withMachine(w, r, a, func(m *machine) {
		if m.lease != nil && r.Header.Get("fly-machine-lease-nonce") != m.lease.Nonce {
			apiError(w, http.StatusConflict, "lease nonce does not match")
			return
		}
		m.lease = nil
		w.WriteHeader(http.StatusOK)
	})
}
