package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Provider is what the gateway needs from a machine host.
type Provider interface {
	// Engines lists the ids of the pool's engines.
	Engines(ctx context.Context) ([]string, error)
	// Start starts engine id if it is not running and returns the address
	// it serves on ("unix:///path" or "tcp://host:port"). The address is
	// asked for at every wake, never cached: hosts move machines.
	// Start returning does not mean the engine is ready; see Prober.
	Start(ctx context.Context, id string) (addr string, err error)
	// Stop stops engine id and returns once it has stopped.
	Stop(ctx context.Context, id string) error
}

// Watcher is an optional capability of a Provider that can tell when an
// engine it started has already failed (its process exited) before it is
// ready. A wake asks it between probes and fails at once with its error —
// the engine's own last words — instead of probing until the wake timeout.
type Watcher interface {
	// Failed returns nil while engine id may still become ready.
	Failed(id string) error
}

// Prober makes one readiness check of the engine at addr: a BuildKit API
// call, not merely an open port. The gateway calls it repeatedly until it
// succeeds or the wake's deadline passes.
type Prober func(ctx context.Context, addr string) error

// Dialer opens a stream to an engine address.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// ErrEngineUnavailable wraps every failure to give a client an engine.
var ErrEngineUnavailable = errors.New("engine unavailable")

// ErrBusy is what a provider's Stop returns (wrapped) when it did not stop
// the engine because clients use it, as through another gateway: the engine
// still runs, so the gateway keeps it Running, keeps billing it and asks
// again after another idle period. Providers that must not import gateway
// (fly) return an error implementing EngineBusy() bool instead.
var ErrBusy = errors.New("engine in use")

// engineBusy is the structural form of ErrBusy.
type engineBusy interface{ EngineBusy() bool }

// IsBusy says whether a provider's Stop error means the engine was left
// running because it is in use.
func IsBusy(err error) bool {
	var b engineBusy
	return errors.Is(err, ErrBusy) || errors.As(err, &b) && b.EngineBusy()
}

// stillStopping is what a provider's Stop error implements when it stopped
// waiting while the host still stops the engine (an engine draining its
// builds before it exits: Fly keeps such a machine "stopping", billed, and
// refuses to start it until it has stopped). The gateway keeps the engine
// Stopping — billed, and a new connection waits — and asks the provider
// again.
type stillStopping interface{ StillStopping() bool }

// IsStillStopping says whether a provider's Stop error means the engine is
// still stopping on its host.
func IsStillStopping(err error) bool {
	var s stillStopping
	return errors.As(err, &s) && s.StillStopping()
}

// DialAddr dials "unix:///path" or "tcp://host:port".
func DialAddr(ctx context.Context, addr string) (net.Conn, error) {
	network, target, err := SplitAddr(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, target)
}

// SplitAddr splits an engine address into a network and a target for net.Dial.
func SplitAddr(addr string) (network, target string, err error) {
	switch {
	case strings.HasPrefix(addr, "unix://"):
		return "unix", strings.TrimPrefix(addr, "unix://"), nil
	case strings.HasPrefix(addr, "tcp://"):
		return "tcp", strings.TrimPrefix(addr, "tcp://"), nil
	}
	return "", "", fmt.Errorf("engine address %q: want unix:///path or tcp://host:port", addr)
}
