package gateway

import (
	"context"
	"errors"
	"net"
)

// The engine contract. A host returns an engine's address as
// "tls://host:port", the engine's mTLS port ('wakegate engine', or Envoy in
// its engine role) — what remote hosts (fly, exec) always return — or, for
// an engine on the gateway's own machine running as the gateway's user (the
// local provider's), as "unix:///path", the engine's unix front: the same
// front without TLS, so no certificate and no revocation check on that hop;
// the socket admits only that user. Never BuildKit's own socket. One
// EngineClient dials, probes and asks the engine at that address —
// engine.Client, which cmd/wakegate wires into Config.Dial,
// EngineConfig.Probe and EngineConfig.BeforeStop (and the fly provider's
// busy check) — so the gateway itself never reads an address.

// Provider is what the gateway needs from a machine host.
type Provider interface {
	// Engines lists the ids of the pool's engines.
	Engines(ctx context.Context) ([]string, error)
	// Start starts engine id if it is not running and returns the address
	// it serves on, "tls://host:port" or, for a local engine,
	// "unix:///path" (see EngineClient). The address is
	// asked for at every wake, never cached: hosts move machines.
	// Start returning does not mean the engine is ready; see Prober.
	Start(ctx context.Context, id string) (addr string, err error)
	// Stop stops engine id and returns once it has stopped. Its error may
	// say more: HostUnavailable (from Start), EngineBusy, StillStopping.
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

// EngineClient is how the gateway speaks to an engine at the address its
// Provider returned. engine.Client implements it; the gateway takes its
// methods one by one (Dialer, Prober, BusyCheck) so that tests and the
// simulator can replace each.
type EngineClient interface {
	// Dial opens a stream to the engine's BuildKit.
	Dial(ctx context.Context, addr string) (net.Conn, error)
	// Ready makes one readiness check: the engine asks BuildKit's own API,
	// since a port opens before BuildKit can serve.
	Ready(ctx context.Context, addr string) error
	// Busy says whether anyone uses the engine (connections or builds),
	// whichever gateway they came through.
	Busy(ctx context.Context, addr string) (bool, error)
}

// Prober makes one readiness check of the engine at addr
// (EngineClient.Ready). The gateway calls it repeatedly until it succeeds
// or the wake's deadline passes.
type Prober func(ctx context.Context, addr string) error

// Dialer opens a stream to the engine at addr (EngineClient.Dial).
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// BusyCheck asks the engine at addr whether anyone uses it
// (EngineClient.Busy).
type BusyCheck func(ctx context.Context, addr string) (busy bool, err error)

// ErrEngineUnavailable wraps every failure to give a client an engine.
var ErrEngineUnavailable = errors.New("engine unavailable")

// The optional capabilities of a provider's errors. Providers that must not
// import gateway (fly, exechost) implement them structurally; their tests
// or cmd/wakegate hold compile-time checks (var _ gateway.EngineBusy = …).
type (
	// HostUnavailable is what a provider's Start error implements when the
	// engine's host cannot take it now (no capacity, its volume attached
	// elsewhere): the connection goes to the client's next-ranked engine
	// instead of failing.
	HostUnavailable interface{ HostUnavailable() bool }

	// EngineBusy is what a provider's Stop error implements when it did not
	// stop the engine because clients use it, as through another gateway:
	// the engine still runs, so the gateway keeps it Running, keeps billing
	// it and asks again after another idle period.
	EngineBusy interface{ EngineBusy() bool }

	// StillStopping is what a provider's Stop error implements when it
	// stopped waiting while the host still stops the engine (an engine
	// draining its builds before it exits: Fly keeps such a machine
	// "stopping", billed, and refuses to start it until it has stopped).
	// The gateway keeps the engine Stopping — billed, and a new connection
	// waits — and asks the provider again.
	StillStopping interface{ StillStopping() bool }
)

// IsHostUnavailable says whether a provider's error means the engine's
// host cannot take it now.
func IsHostUnavailable(err error) bool {
	var h HostUnavailable
	return errors.As(err, &h) && h.HostUnavailable()
}

// IsBusy says whether a provider's Stop error means the engine was left
// running because it is in use.
func IsBusy(err error) bool {
	var b EngineBusy
	return errors.As(err, &b) && b.EngineBusy()
}

// IsStillStopping says whether a provider's Stop error means the engine is
// still stopping on its host.
func IsStillStopping(err error) bool {
	var s StillStopping
	return errors.As(err, &s) && s.StillStopping()
}
