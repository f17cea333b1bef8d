package fly

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/superfly/fly-go/flaps"
)

// refusalKind is what a Machines API refusal means for the caller.
type refusalKind int

const (
	// otherRefusal: nothing to do but report it.
	otherRefusal refusalKind = iota
	// capacityRefusal: the machine's host (or the organization's quota in
	// its region) cannot take it now: the connection goes to another
	// engine.
	capacityRefusal
	// stateRefusal: the machine is between states (replacing, stopping,
	// an update in progress): wait for it to settle and try again.
	stateRefusal
	// leaseRefusal: another holder has the machine's lease, or ours is
	// gone (expired, or taken after it expired).
	leaseRefusal
)

// classify reads a refusal as flyctl does: by the call, the status and
// the message. Capacity: "could not reserve resource for machine" on an
// update (409) or a start (flyctl internal/command/deploy/
// machines_deploymachinesapp.go, internal/command/machine/start.go,
// internal/build/imgsrc/ensure_builder.go, which also reads "deploys to
// this host are temporarily disabled" so), "insufficient resources" on a
// start pinned by its volume (412), an organization "over the allowed
// quota" in a region (403) — production payloads in Kilo-Org/cloud
// kiloclaw/src/fly/client.test.ts; a volume attached to another machine is
// a 412 too (https://community.fly.io/t/409-conflict-error-from-machines-api/15555).
// State: a 412 "unable to start machine from current state" or "…refusing
// to start" while the machine is replacing or stopping
// (https://github.com/hexclave/hexclave/pull/2060), a 409 "concurrent
// update in progress" (flyctl test/preflight/apps_v2_integration_test.go).
// Lease: a 409 that names the lease or its nonce.
func classify(err error) (refusalKind, string) {
	var fe *flaps.FlapsError
	if !errors.As(err, &fe) {
		return otherRefusal, ""
	}
	msg := apiMessage(fe)
	low := strings.ToLower(msg)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(low, s) {
				return true
			}
		}
		return false
	}
	capacity := has("could not reserve resource", "insufficient resources", "insufficient memory", "insufficient cpus",
		"deploys to this host are temporarily disabled")
	switch fe.ResponseStatusCode {
	case http.StatusForbidden:
		if has("over the allowed quota") {
			return capacityRefusal, msg
		}
	case http.StatusConflict:
		switch {
		case has("lease", "nonce"):
			return leaseRefusal, msg
		case capacity:
			return capacityRefusal, msg
		case has("concurrent update", "replacing", "updating"):
			return stateRefusal, msg
		}
	case http.StatusPreconditionFailed:
		switch {
		case capacity, has("attached to another machine"):
			return capacityRefusal, msg
		case has("current state", "refusing to", "getting replaced", "still active"):
			return stateRefusal, msg
		}
	}
	if capacity {
		return capacityRefusal, msg
	}
	return otherRefusal, msg
}

// apiMessage is the refusal's own words: {"error": …} or {"message": …}
// as flaps reads them, else the body.
func apiMessage(fe *flaps.FlapsError) string {
	var body struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(fe.ResponseBody, &body) == nil {
		if body.Message != "" {
			return body.Message
		}
		if body.Error != "" {
			return body.Error
		}
	}
	if s := strings.TrimSpace(string(fe.ResponseBody)); s != "" {
		return s
	}
	return fe.Error()
}

// HostError says a machine's host cannot take it now (no capacity, its
// volume attached elsewhere, the organization over quota in its region):
// the connection should go to another engine.
type HostError struct {
	Machine, Reason string
}

func (e *HostError) Error() string {
	return fmt.Sprintf("machine %s: its host cannot take it now: %s (the gateway tries another engine; if this lasts, see 'wakegate fly status' and docs/fly.md)", e.Machine, e.Reason)
}

// HostUnavailable marks the error for the gateway's rerouting.
func (e *HostError) HostUnavailable() bool { return true }

// errLeaseLost says the machine's lease went to someone else during an
// operation (ours expired): the operation is retried under a new lease,
// after reading the machine again. It never marks the machine unhealthy.
var errLeaseLost = errors.New("the machine's lease was lost to another holder")

// StoppingError says the machine was still stopping when the provider
// stopped waiting: Fly ends the stop when the engine's process has exited
// (an engine drains its builds first, up to the machine's kill timeout).
// The machine is billed until then, and cannot be started before: the
// gateway keeps the engine "stopping" (gateway.IsStillStopping) and asks
// again.
type StoppingError struct {
	Machine, State string
}

func (e *StoppingError) Error() string {
	return fmt.Sprintf("machine %s is still %s: its engine is draining; Fly finishes the stop when the engine exits (at most the machine's kill timeout)", e.Machine, e.State)
}

// StillStopping meets the gateway's optional interface structurally: fly
// must not import gateway.
func (e *StoppingError) StillStopping() bool { return true }
