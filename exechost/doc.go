// Package exechost is the exec provider: engine machines on any host that
// three shell command lines can start, stop and report (a cloud CLI, a
// hypervisor's tool, ssh to a box under a desk). Each command runs with
// /bin/sh -c under a deadline in its own process group, with the engine's
// id, certificate name and, for a start, its single-use enrolment token in
// its environment and none of the gateway's secrets; what it prints reaches
// an error message only with every secret blanked. The start command prints
// the engine's host:port, which the provider returns as the engine's
// address, tls://host:port.
//
// It satisfies gateway.Provider structurally (cmd/wakegate holds the
// compile-time check) and must not import gateway, engine, fly or cmd.
package exechost
