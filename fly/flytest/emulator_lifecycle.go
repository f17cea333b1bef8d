package flytest

import (
	"fmt"
	"net/http"

	fly "github.com/superfly/fly-go"
)

// Refusals as Fly words them. A start during an update:
// "failed_precondition: unable to start machine from current state:
// 'replacing'"; during a stop: "machine still active, refusing to start"
// (both 412, https://github.com/hexclave/hexclave/pull/2060 and the [PM07]
// lines Fly logs: "failed to change machine state: machine getting
// replaced, refusing to start").
func refusal(w http.ResponseWriter, action, state string) {
	msg := fmt.Sprintf("failed_precondition: unable to %s machine from current state: '%s'", action, state)
	switch state {
	case "stopping":
		msg = "failed to change machine state: machine still active, refusing to " + action
	case "replacing", "updating":
		msg = "failed to change machine state: machine getting replaced, refusing to " + action
		if action == "start" {
			msg = fmt.Sprintf("failed_precondition: unable to start machine from current state: '%s'", state)
		}
	}
	apiError(w, http.StatusPreconditionFailed, msg)
}

func (e *Emulator) startMachine(w http.ResponseWriter, r *http.Request, a *app) {
	e.withMachine(w, r, a, func(m *machine) {
		if !e.leaseOK(w, r, m) {
			return
		}
		prev := m.m.State
		switch prev {
		case "started", "starting":
			writeJSON(w, fly.MachineStartResponse{Status: "success", PreviousState: prev})
			return
		case "suspending":
			// Fly cancels the snapshot and lets the paused process run on
			// (https://community.fly.io/t/machines-can-now-start-from-the-suspending-state/26623).
		case "created", "stopped", "suspended", "failed":
			if q := a.overQuota[m.m.Region]; q != "" {
				apiError(w, http.StatusForbidden, q)
				return
			}
			if m.noCap != "" {
				// The volume pins the machine to its host: 412 "insufficient
				// resources" (Kilo-Org/cloud kiloclaw/src/fly/client.test.ts,
				// production payloads), worded as flyctl's start reads a
				// capacity refusal: " for machine"
				// (internal/command/machine/start.go).
				vol := ""
				for _, mt := range m.m.Config.Mounts {
					vol = mt.Volume
				}
				apiError(w, http.StatusPreconditionFailed,
					fmt.Sprintf("insufficient resources to start machine with existing volume '%s': could not reserve resource for machine: %s", vol, m.noCap))
				return
			}
		default:
			refusal(w, "start", prev)
			return
		}
		e.beginStartLocked(a, m)
		writeJSON(w, fly.MachineStartResponse{Status: "success", PreviousState: prev})
	})
}

// beginStartLocked moves the machine to starting and boots it after
// StartDelay: a new process, or the snapshot's own process resumed.
func (e *Emulator) beginStartLocked(a *app, m *machine) {
	m.gen++
	gen := m.gen
	e.setStateLocked(m, "starting", "start")
	e.laterLocked(e.opts.StartDelay, func() { e.boot(a, m, gen) })
}

// boot runs the machine: it resumes a frozen process (with the environment
// it was started with: https://github.com/superfly/flyctl/issues/4707) or
// starts a new one. A runner that fails leaves the machine stopped.
func (e *Emulator) boot(a *app, m *machine, gen uint64) {
	e.mu.Lock()
	if m.gen != gen || m.m.State != "starting" || e.shutdown {
		e.mu.Unlock()
		return
	}
	c := m.copyLocked()
	resume := m.frozen
	dir := ""
	for _, mt := range c.Config.Mounts {
		dir = e.volumeDir(mt.Volume)
	}
	e.mu.Unlock()

	var exited <-chan struct{}
	var err error
	if run := e.opts.Runner; run != nil {
		if resume {
			err = run.Thaw(c)
		} else {
			exited, err = run.Start(c, dir)
		}
	} else if !resume {
		exited = make(chan struct{})
	}

	e.mu.Lock()
	if e.shutdown {
		e.mu.Unlock()
		if err == nil && !resume && e.opts.Runner != nil {
			e.opts.Runner.Stop(c)
		}
		return
	}
	defer e.mu.Unlock()
	if err != nil {
		e.opts.Log.Error("emulated machine failed to start", "machine", c.ID, "err", err)
		m.exited, m.frozen = nil, false
		e.setStateLocked(m, "stopped", "exit")
		return
	}
	if !resume {
		m.exited = exited
		e.watchLocked(m, exited)
	}
	m.frozen = false
	e.setStateLocked(m, "started", "start")
}

// watchLocked makes a process that ends on its own (an engine's idle exit,
// a crash, the OOM killer) leave its machine stopped, as Fly records it
// ("stopped: exited, either on its own or explicitly stopped",
// https://fly.io/docs/machines/machine-states/). Machines here have no
// restart policy; Fly would restart one with "always" or "on-failure".
func (e *Emulator) watchLocked(m *machine, exited <-chan struct{}) {
	if e.shutdown {
		return
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		select {
		case <-exited:
		case <-e.done:
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if m.exited == exited && m.m.State == "started" {
			m.exited = nil
			m.gen++
			e.setStateLocked(m, "stopped", "exit")
		}
	}()
}

func (e *Emulator) stopMachine(w http.ResponseWriter, r *http.Request, a *app) {
	e.withMachine(w, r, a, func(m *machine) {
		if !e.leaseOK(w, r, m) {
			return
		}
		switch m.m.State {
		case "started":
			e.beginStopLocked(m)
		case "suspended":
			// "Stopping a suspended Machine will invalidate its snapshot"
			// (https://fly.io/docs/machines/api/machines-resource/#stop-a-machine).
			e.beginStopLocked(m)
		case "stopping", "stopped", "created":
		default:
			refusal(w, "stop", m.m.State)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

// beginStopLocked ends the machine's process as Fly does: the kill signal,
// then the kill timeout (the runner waits for the process to exit). The
// machine stays "stopping" until the process has really ended:
// an engine draining builds keeps it there for minutes
// (https://fly.io/docs/reference/configuration/#kill_timeout-option), and a
// start meanwhile is refused. Then it is final after StopDelay.
func (e *Emulator) beginStopLocked(m *machine) {
	m.gen++
	gen := m.gen
	proc, c := m.exited, m.copyLocked()
	m.frozen = false
	e.setStateLocked(m, "stopping", "stop")
	e.laterLocked(0, func() {
		if proc != nil && e.opts.Runner != nil {
			if err := e.opts.Runner.Stop(c); err != nil {
				e.opts.Log.Error("emulated machine stop", "machine", c.ID, "err", err)
			}
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if m.exited == proc {
			m.exited = nil
		}
		e.laterLocked(e.opts.StopDelay, func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			if m.gen == gen {
				e.setStateLocked(m, "stopped", "stop")
			}
		})
	})
}

// suspendMachine pauses the machine's process at once (Firecracker pauses
// the VM while its memory is copied), spends SuspendDelay suspending, then
// is suspended with the paused process as its snapshot
// (https://fly.io/docs/reference/suspend-resume/,
// https://community.fly.io/t/machines-can-now-start-from-the-suspending-state/26623).
func (e *Emulator) suspendMachine(w http.ResponseWriter, r *http.Request, a *app) {
	e.withMachine(w, r, a, func(m *machine) {
		if !e.leaseOK(w, r, m) {
			return
		}
		switch m.m.State {
		case "started":
		case "suspending", "suspended":
			w.WriteHeader(http.StatusOK)
			return
		default:
			refusal(w, "suspend", m.m.State)
			return
		}
		m.gen++
		gen := m.gen
		// Frozen here, under the lock, so that a start arriving while
		// suspending always finds the process paused before it thaws it.
		if e.opts.Runner != nil {
			if err := e.opts.Runner.Freeze(m.copyLocked()); err != nil {
				e.opts.Log.Error("emulated machine freeze", "machine", m.m.ID, "err", err)
			}
		}
		m.frozen = true
		e.setStateLocked(m, "suspending", "suspend")
		e.laterLocked(e.opts.SuspendDelay, func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			if m.gen == gen && m.m.State == "suspending" {
				e.setStateLocked(m, "suspended", "suspend")
			}
		})
		w.WriteHeader(http.StatusOK)
	})
}

// beginReplaceLocked plays an accepted update: replacing for UpdateDelay,
// the old process (or a snapshot) ended, then started with the new config
// if it was running and the update launches it, else stopped (created if
// it was never started).
func (e *Emulator) beginReplaceLocked(a *app, m *machine, launch bool) {
	prev := m.m.State
	m.gen++
	gen := m.gen
	proc, c := m.exited, m.copyLocked()
	m.frozen = false
	e.setStateLocked(m, "replacing", "update")
	e.laterLocked(0, func() {
		if proc != nil && e.opts.Runner != nil {
			if err := e.opts.Runner.Stop(c); err != nil {
				e.opts.Log.Error("emulated machine stop for update", "machine", c.ID, "err", err)
			}
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if m.exited == proc {
			m.exited = nil
		}
		e.laterLocked(e.opts.UpdateDelay, func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			if m.gen != gen {
				return
			}
			switch {
			case prev == "started" && launch:
				e.beginStartLocked(a, m)
			case prev == "created":
				e.setStateLocked(m, "created", "update")
			default:
				e.setStateLocked(m, "stopped", "update")
			}
		})
	})
}
