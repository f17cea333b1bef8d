// Package enginecmd is the command line of an engine machine, 'wakegate
// engine', as every host starts it: the local provider for each engine
// process, 'wakegate fly init' in each machine's configuration (which the
// Fly emulator's runner runs as it is), and the gateway's wiring for what
// all of its engines share (the CA to enrol at, drain and stop bounds,
// certificate lifetime). One struct, one builder, so that a flag renamed in
// 'wakegate engine' is renamed for every host at once; cmd/wakegate's tests
// parse what Args builds with the engine's own flag set.
//
// An engine's certificate name is identity.EngineName; its address, dial,
// readiness probe and busy check are engine.Client's. It imports the
// standard library only, so that fly, engine and cmd share it without
// linking each other.
package enginecmd
