package flytest

import "time"

// Fly's rate limits "apply per-action, per-machine and are scoped per
// identifier. That might be Machine ID or App ID, depending on the type of
// request. The limit is 1 request, per second, per action … with a
// short-term burst limit up to 3 req/s, per action. This applies to all
// actions except Get Machine which is 5 req/s, with a short-term burst
// limit up to 10 req/s."
// (https://fly.io/docs/machines/api/working-with-machines-api/#rate-limits)

// bucket is a token bucket for one (action, machine or app) pair.
type bucket struct {
	tokens float64
	last   time.Time
}

// allowLocked takes a token for the action on machine id, or on the app
// for app-level calls (list, create, volumes).
func (e *Emulator) allowLocked(action, appName, id string) bool {
	rate, burst := e.opts.RatePerSecond, e.opts.Burst
	if action == "get" {
		rate, burst = e.opts.GetRatePerSecond, e.opts.GetBurst
	}
	if rate <= 0 || e.opts.RatePerSecond <= 0 {
		return true
	}
	key := action + "/machine/" + id
	if id == "" {
		key = action + "/app/" + appName
	}
	capacity := float64(max(burst, 1))
	b, ok := e.buckets[key]
	now := time.Now()
	if !ok {
		b = &bucket{tokens: capacity, last: now}
		e.buckets[key] = b
	}
	b.tokens = min(capacity, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
