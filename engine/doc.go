// Package engine owns what runs a BuildKit engine, and how the gateway
// speaks to one.
//
// The machine's side ('wakegate engine'): supervising a buildkitd process
// — or Dagger's engine, in mount, PID and network namespaces of its own
// (NSInit) — on a persistent state directory (its cache volume); the mTLS
// front that admits only the gateway (its role, not its name) and answers
// GET /ready and /status on the same port, and the same front on a unix
// socket, without TLS, for a gateway of the same user on this machine
// (unixfront.go); the readiness probe that asks
// BuildKit's own API whether it can serve; how each kind of engine is
// asked about its work (activity); the stop budget that fits inside the
// host's kill timeout; and a Config that Validate judges before the
// engine's single-use token is spent.
//
// The gateway's side, the engine contract: an engine is addressed as
// "tls://host:port", or a local engine as "unix:///path" (its unix front),
// and Client dials it (proxied streams), probes it
// (Ready) and asks whether anyone uses it (Busy, Status); its certificate
// name is identity.EngineName.
//
// Local is the embedded default provider: each engine of the pool is a
// 'wakegate engine' process on this machine, started with the command
// line enginecmd builds. The exec provider is exechost's.
//
// Local and Client satisfy gateway's interfaces structurally
// (cmd/wakegate holds the compile-time checks); engine must not import
// gateway, connect, fly or cmd.
package engine
