package flytest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	fly "github.com/superfly/fly-go"
)

// machine is one emulated machine; the emulator's mu guards it.
type machine struct {
	m     *fly.Machine
	lease *fly.MachineLeaseData
	// leaseUntil is the lease's expiry to the nanosecond (ExpiresAt, as
	// Fly answers it, is in seconds).
	leaseUntil time.Time
	noCap      string // non-empty: its host cannot take it now (capacity)
	// exited is the process's end, while it has one (running, stopping
	// or frozen); nil otherwise.
	exited <-chan struct{}
	frozen bool // the process is a suspended machine's snapshot
	// gen counts transitions: a delayed step that finds it changed was
	// overtaken (a start during suspending, a stop, an update) and does
	// nothing.
	gen uint64
}

// settledStates are Fly's persistent states: a wait for "settled" ends in
// any of them (flyctl internal/machine/wait.go waits for "settled" after
// an update, then reads the state it settled in;
// https://fly.io/docs/machines/machine-states/).
var settledStates = []string{"created", "started", "stopped", "suspended", "failed", "destroyed"}

func (m *machine) copyLocked() *fly.Machine {
	c := *m.m
	c.Events = append([]*fly.MachineEvent(nil), m.m.Events...)
	return &c
}

// setStateLocked changes the state as Fly reports it: updated_at moves and
// an event is recorded (newest first, as GET machine lists them).
func (e *Emulator) setStateLocked(m *machine, state, event string) {
	now := time.Now()
	m.m.State = state
	m.m.UpdatedAt = now.UTC().Format(time.RFC3339Nano)
	ev := &fly.MachineEvent{Type: event, Status: state, Source: "flyd", Timestamp: now.UnixMilli()}
	m.m.Events = append([]*fly.MachineEvent{ev}, m.m.Events...)
	if len(m.m.Events) > 10 {
		m.m.Events = m.m.Events[:10]
	}
	e.changed.Broadcast()
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
		out = append(out, m.copyLocked())
	}
	e.mu.Unlock()
	writeJSON(w, out)
}

func (e *Emulator) getMachine(w http.ResponseWriter, r *http.Request, a *app) {
	e.withMachine(w, r, a, func(m *machine) { writeJSON(w, m.copyLocked()) })
}

func (e *Emulator) createMachine(w http.ResponseWriter, r *http.Request, a *app) {
	var in fly.LaunchMachineInput
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Config == nil {
		apiError(w, http.StatusBadRequest, "a machine needs a config")
		return
	}
	e.mu.Lock()
	if q := a.overQuota[in.Region]; q != "" {
		e.mu.Unlock()
		apiError(w, http.StatusForbidden, q)
		return
	}
	for _, mt := range in.Config.Mounts {
		v, ok := a.volumes[mt.Volume]
		if !ok {
			e.mu.Unlock()
			apiError(w, http.StatusNotFound, "volume "+mt.Volume+" not found")
			return
		}
		if v.v.AttachedMachine != nil {
			// A volume serves one machine: 412
			// (https://community.fly.io/t/409-conflict-error-from-machines-api/15555).
			e.mu.Unlock()
			apiError(w, http.StatusPreconditionFailed, "volume "+mt.Volume+" is attached to another machine")
			return
		}
		if in.Region != "" && v.v.Region != in.Region {
			e.mu.Unlock()
			apiError(w, http.StatusBadRequest, fmt.Sprintf("volume %s is in region %s, not %s", mt.Volume, v.v.Region, in.Region))
			return
		}
	}
	now := time.Now().UTC()
	m := &fly.Machine{ID: newID(7), Name: in.Name, Region: in.Region, Config: in.Config, InstanceID: newID(8),
		PrivateIP: e.nextAddrLocked(), CreatedAt: now.Format(time.RFC3339), HostStatus: fly.HostStatusOk}
	if m.Name == "" {
		m.Name = "machine-" + m.ID
	}
	mc := &machine{m: m}
	for _, mt := range in.Config.Mounts {
		id := m.ID
		a.volumes[mt.Volume].v.AttachedMachine = &id
	}
	a.machines[m.ID] = mc
	e.setStateLocked(mc, "created", "launch")
	if !in.SkipLaunch {
		e.beginStartLocked(a, mc)
	}
	c := mc.copyLocked()
	e.mu.Unlock()
	writeJSON(w, c)
}

// updateMachine replaces the machine's config. On Fly the answer comes
// before the work is done: the machine is "replacing" for seconds (image
// pulled, old version stopped), then settles in the state it had if it was
// not running ("machine was in a non-started state prior to the update so
// leaving the new version stopped"), or started. A suspended machine's
// snapshot is discarded: it cannot resume new code. Sources:
// https://fly.io/docs/machines/machine-states/ (replacing, update
// behaviour), https://github.com/hexclave/hexclave/pull/2060 (update
// answers first; a start meanwhile is refused 412; a suspended machine
// ends stopped), https://fly.io/docs/reference/suspend-resume/ (a deploy
// discards the snapshot).
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
		switch m.m.State {
		case "replacing", "updating":
			// flyctl test/preflight/apps_v2_integration_test.go: a second
			// update while replacing is refused "machine is replacing:
			// concurrent update in progress" (409 Conflict).
			apiError(w, http.StatusConflict, "machine is "+m.m.State+": concurrent update in progress")
			return
		case "starting", "stopping", "suspending", "destroying", "destroyed":
			apiError(w, http.StatusPreconditionFailed, "failed to update machine: machine is "+m.m.State+", refusing to update")
			return
		}
		if q := a.overQuota[m.m.Region]; q != "" {
			apiError(w, http.StatusForbidden, q)
			return
		}
		if m.noCap != "" {
			// Capacity on the machine's host: 409 "aborted: could not
			// reserve resource for machine: …" (a production payload in
			// Kilo-Org/cloud kiloclaw/src/fly/client.test.ts; flyctl
			// internal/command/deploy/machines_deploymachinesapp.go reads
			// "could not reserve resource for machine" as capacity).
			apiError(w, http.StatusConflict, "aborted: could not reserve resource for machine: "+m.noCap)
			return
		}
		m.m.Config = in.Config
		m.m.InstanceID = newID(8)
		e.beginReplaceLocked(a, m, !in.SkipLaunch)
		writeJSON(w, m.copyLocked())
	})
}

// waitMachine long-polls until the machine is in one of the states asked
// for ("settled": any persistent state), or the timeout passes: 408, as
// Fly answers. Fly caps one wait at 60 s
// (https://fly.io/docs/machines/api/machines-resource/#wait-for-a-machine-to-reach-a-specified-state;
// fly-go flaps/flaps_machines_wait.go clamps it to 1–60 s).
func (e *Emulator) waitMachine(w http.ResponseWriter, r *http.Request, a *app) {
	var states []string
	for _, s := range r.URL.Query()["state"] {
		if s == "settled" {
			states = append(states, settledStates...)
		} else {
			states = append(states, s)
		}
	}
	if len(states) == 0 {
		states = []string{"started"}
	}
	secs, err := strconv.Atoi(r.URL.Query().Get("timeout"))
	if err != nil || secs <= 0 {
		secs = 60
	}
	deadline := time.Now().Add(min(time.Duration(secs)*time.Second, e.opts.MaxWait))
	wake := func() {
		e.mu.Lock()
		e.changed.Broadcast()
		e.mu.Unlock()
	}
	timer := time.AfterFunc(time.Until(deadline), wake)
	defer timer.Stop()
	stop := context.AfterFunc(r.Context(), wake)
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
		if slices.Contains(states, m.m.State) {
			writeJSON(w, map[string]any{"ok": true, "state": m.m.State})
			return
		}
		if time.Now().After(deadline) || r.Context().Err() != nil || e.shutdown {
			apiError(w, http.StatusRequestTimeout, "deadline exceeded waiting for machine to be "+strings.Join(r.URL.Query()["state"], ","))
			return
		}
		e.changed.Wait()
	}
}
