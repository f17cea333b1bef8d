// Package gateway is wakegate's front door: a TLS 1.3 listener that requires
// a client certificate from the CA, routes each client identity to an engine
// of the pool, wakes that engine on demand while holding the connection, and
// proxies bytes once the engine answers BuildKit's API. A held client that
// leaves is let go at once; what it sent while held reaches the engine, on
// a stream dialled while the engine starts where the engine takes one
// (early.go). Each
// identity has a cap on its open connections, and refusals are logged at a
// bounded rate. When an engine's last connection closes, an idle grace timer
// starts; when it fires the engine is stopped through its Provider.
//
// The gateway defines the interfaces it consumes (provider.go): Provider
// and its optional Watcher; the capabilities a provider's errors may have
// (HostUnavailable, EngineBusy, StillStopping); and the engine contract —
// an engine's address is "tls://host:port" (or a local engine's
// "unix:///path"), and one EngineClient dials,
// probes and asks it (engine.Client, which cmd/wakegate wires in as
// Config.Dial, Config.EarlyStreams, EngineConfig.Probe and
// EngineConfig.BeforeStop). Hosts
// (engine's local provider, fly, exechost) satisfy them without the
// gateway importing them. Accepting, draining and forcing connections at
// shutdown is proxy.Server's, shared with connect. Identities are read
// with identity, a leaf, so the gateway links no CA code.
//
// It must not import certs, engine, fly, exechost, connect or cmd.
package gateway
