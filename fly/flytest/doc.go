// Package flytest is an emulator of the Fly Machines API endpoints that
// wakegate's fly provider uses — machines (list, get, create, update,
// start, stop, suspend, wait), leases and volumes — with Fly's state
// transitions and delays, lease semantics, per-action rate limits, and
// injectable 429s, 5xx and hangs. A Runner turns started machines into
// real processes: with EngineRunner each machine is a 'wakegate engine' on
// its own loopback address (127.0.0.x), as Fly gives each machine its own
// private address, so the Fly path is tested end to end with real BuildKit
// through fly-go's own flaps client.
//
// It is reached through flaps' base URL setting (FLY_FLAPS_BASE_URL) and
// runs standalone as 'wakegate dev fly-emulator'. It must not import
// gateway, fly or cmd.
package flytest
