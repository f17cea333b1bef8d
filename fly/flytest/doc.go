// Package flytest is an emulator of the Fly Machines API endpoints that
// wakegate's fly provider uses — machines (list, get, create, update,
// start, stop, suspend, wait), leases and volumes — faithful to how Fly
// behaves where a kinder fake would hide bugs: an update is answered at
// once and leaves the machine "replacing" for a while (a start meanwhile is
// refused 412, a second update 409); a stop leaves it "stopping" until its
// process has really exited; a process that exits on its own leaves its
// machine stopped; suspend pauses the process and a start resumes that
// same process; capacity is refused 409 on update, 412 on a volume-pinned
// start and 403 over an organization's quota; leases conflict with 409 and
// refresh with the same nonce; every action is rate limited (Get apart),
// 429s may come without Retry-After, and faults can hang, fail, or apply a
// request and then fail it. Every behaviour names its source (Fly's docs,
// flyctl or fly-go, or reports in other projects' trackers) next to its
// code.
//
// A Runner turns started machines into real processes: with EngineRunner
// each machine is a 'wakegate engine' on its own loopback address
// (127.0.0.x), as Fly gives each machine its own private address, so the
// Fly path is tested end to end with real BuildKit through fly-go's own
// flaps client. The emulator's delays (boot, update, stop, suspend) are its
// simulated platform's and configurable; tests keep them short.
//
// It is reached through flaps' base URL setting (FLY_FLAPS_BASE_URL) and
// runs standalone as 'wakegate dev fly-emulator'. It must not import
// gateway, fly or cmd.
package flytest
