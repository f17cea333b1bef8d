// Package engine owns what runs a BuildKit engine: supervising a buildkitd
// process — or Dagger's engine, in namespaces of its own (NSInit) — on a
// persistent state directory (its cache volume), the readiness probe that
// asks BuildKit's own API whether it can serve, how each kind of engine is
// asked about its work (activity), the stop budget that fits inside the
// host's kill timeout, and Local, the embedded default provider that runs
// each engine of the pool as a local process.
//
// Local satisfies gateway.Provider structurally; engine must not import
// gateway, connect or cmd.
package engine
