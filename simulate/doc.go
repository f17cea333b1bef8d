// Package simulate replays a CI trace against the gateway's real pool and
// engine state machines (gateway.Pool, gateway.Engine: placement, wakes,
// idle stops) on a virtual clock, to compare policies by machine-seconds
// billed, cold starts, wait for an engine and cache hits. It is a
// discrete-event simulation: time jumps to the next timer once every
// goroutine of the state machines is blocked on the clock.
//
// It imports gateway; nothing imports it but cmd.
package simulate
