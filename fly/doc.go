// Package fly drives Fly.io Machines as wakegate's engine hosts, through
// fly-go's flaps client: it discovers a pool's engine machines by metadata,
// starts them from stopped or suspended and waits with the API's long poll,
// stops or suspends them, coordinates gateway replicas with machine leases,
// and reads each engine's private address at every wake (Fly changes it
// when it migrates a machine). Calls are bounded by context deadlines and
// retried on 429 (honouring Retry-After) and 5xx by a go-retryablehttp
// transport under flaps.
//
// It satisfies gateway.Provider structurally and must not import gateway,
// engine or cmd. fly/flytest emulates the API for tests.
package fly
