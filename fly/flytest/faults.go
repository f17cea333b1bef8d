package flytest

import "time"

// Fault is an injected failure: the next Count requests of Action (to
// Machine, or any machine when empty) hang for Hang, then answer Status
// (with Retry-After when set), or proceed normally when Status is 0.
type Fault struct {
	Action     string // "start", "stop", "wait", "lease", "get", "list", …
	Machine    string
	Count      int
	Hang       time.Duration
	Status     int
	RetryAfter time.Duration
	Message    string
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

// bucket is a token bucket for one (action, machine) pair, as Fly limits
// mutations to about one per second per machine with a small burst.
type bucket struct {
	tokens float64
	last   time.Time
}

func (e *Emulator) allow(action, id string) bool {
	if e.opts.RatePerSecond <= 0 || id == "" {
		return true
	}
	burst := float64(max(e.opts.Burst, 1))
	key := action + "/" + id
	b, ok := e.buckets[key]
	now := time.Now()
	if !ok {
		b = &bucket{tokens: burst, last: now}
		e.buckets[key] = b
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*e.opts.RatePerSecond)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
