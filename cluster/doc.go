// Package cluster lets several gateways serve one pool of engines whose
// provider has no lock of its own (the local and exec providers; Fly has
// machine leases). It wraps such a provider in a Provider that coordinates
// the gateways through the database they already share, the CA's: one lease
// row per engine says which gateway may start and stop it, and at which
// address it serves. A gateway that finds a live lease held by another
// proxies to that address instead of starting a second engine; a gateway
// that dies holding a lease loses it when the lease expires, and the next
// start anywhere takes it over.
//
// The lease is written with compare-and-swap on its exact stored bytes
// (smallstep's nosql CmpAndSwap), and a released lease stays as a row with
// no holder, so that only an engine's very first lease is an insert: that
// insert is the one write whose atomicity across processes the Store must
// guarantee itself.
//
// It defines what it consumes (Host, Store) and satisfies
// gateway.Provider and gateway.Watcher structurally; cmd/wakegate wires it
// and holds the compile-time checks. It must not import gateway, engine,
// fly, exechost, connect or cmd.
package cluster
