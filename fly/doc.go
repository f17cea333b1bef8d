// Package fly drives Fly.io Machines as wakegate's engine hosts, through
// fly-go's flaps client, as Fly really behaves: it discovers a pool's
// engine machines by metadata; wakes a machine from wherever it is —
// waiting out an update that is still "replacing" or a stop that is still
// "stopping" before starting it, resuming a recently suspended machine as
// it is — and waits with the API's long poll, in rounds of at most Fly's
// 60 s cap; stops or suspends machines, reporting a stop that outlasts its
// wait as still stopping (the gateway keeps it billed); reads Fly's
// refusals by call, status and message as flyctl does (capacity: reroute;
// state: wait; lease: start over under a new lease); coordinates gateway
// replicas with machine leases refreshed while held; and reads each
// engine's private address at every wake (Fly changes it when it migrates
// a machine). Calls are bounded by context deadlines and retried on 429
// (honouring Retry-After, backing off without it) and 5xx by a
// go-retryablehttp transport under flaps; creates are never retried
// blindly. Init and Status are 'wakegate fly init' and 'fly status'.
//
// Each machine runs 'wakegate engine' with the command line enginecmd
// builds, and gets its CA, name (identity.EngineName) and single-use token
// in its environment at each start (Config.Prepare).
//
// It satisfies gateway.Provider, and its errors the gateway's optional
// capabilities (HostUnavailable, EngineBusy, StillStopping), structurally:
// its tests hold the compile-time checks. It must not import gateway,
// engine or cmd. fly/flytest emulates the API for tests.
package fly
