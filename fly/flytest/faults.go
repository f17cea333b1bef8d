package flytest

import "time"

// Fault is an injected failure: the next Count requests of Action (to
// Machine, or any machine when empty) hang for Hang, then answer Status
// (with Retry-After when set), or proceed normally when Status is 0. With
// Apply the request takes effect before the failure is answered: the
// ambiguous outcome of a create whose answer was lost (flyctl
// internal/flapsutil/retry.go: "a 408 from flaps is *ambiguous* — the
// upstream side-effect may or may not have happened").
type Fault struct {
	Action     string // "start", "stop", "wait", "lease", "get", "list", "create", "create_volume", …
	Machine    string
	Count      int
	Hang       time.Duration
	Status     int
	RetryAfter time.Duration
	Message    string
	Apply      bool
}

// Inject queues a fault.
func (e *Emulator) Inject(f Fault) {
	if f.Count <= 0 {
		f.Count = 1
	}
	if f.Message == "" {
		f.Message = "injected failure"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	fc := f
	e.faults = append(e.faults, &fc)
}

// takeFault consumes the first fault matching action and machine id.
func (e *Emulator) takeFault(action, id string) *Fault {
	for i, f := range e.faults {
		if f.Action == action && (f.Machine == "" || f.Machine == id) {
			f.Count--
			if f.Count <= 0 {
				e.faults = append(e.faults[:i], e.faults[i+1:]...)
			}
			return f
		}
	}
	return nil
}
