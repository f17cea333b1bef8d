package enginecmd

import (
	"strconv"
	"time"
)

// Verb is the wakegate subcommand an engine machine runs.
const Verb = "engine"

// Flag names of 'wakegate engine' that a host rewrites or reads back.
const (
	// ListenFlag is the mTLS address for the gateway: a host that gives
	// each machine its own address (Fly's private network, the emulator's
	// loopback addresses) moves it there.
	ListenFlag = "--listen"
	// StateFlag is the engine's state directory, its cache volume.
	StateFlag = "--state"
)

// KindDagger is the Engine of a Dagger engine; anything else, "" included,
// is BuildKit ('wakegate engine' defaults to it).
const KindDagger = "dagger"

// Command is one engine machine's 'wakegate engine' invocation. Empty
// fields are left out, so that the engine's own defaults (and its
// WAKEGATE_* environment: the CA URL and fingerprint, the name, the token)
// apply.
type Command struct {
	// State is the cache volume (--state).
	State string
	// Listen is the mTLS address for the gateway (--listen).
	Listen string
	// AddrFile is where the engine writes the address it listens on once
	// it can serve (--addr-file).
	AddrFile string
	// ListenUnix is a unix socket on which the engine also serves the
	// gateway, without TLS (--listen-unix): for a gateway on the same
	// machine running as the engine's user, the local provider's. It is
	// open before the engine writes AddrFile.
	ListenUnix string
	// Name is the engine's certificate name (--name), identity.EngineName
	// of its id. Hosts that hand it over in WAKEGATE_ENGINE_NAME leave it
	// empty.
	Name string

	// Engine is the kind of engine: KindDagger, or "" for BuildKit.
	Engine string
	// Buildkitd is the buildkitd binary (--buildkitd), for BuildKit.
	Buildkitd string
	// EngineBin is the directory of Dagger's binaries (--engine-bin).
	EngineBin string
	// EngineNet is a Dagger engine's network (--engine-net): private or
	// host.
	EngineNet string
	// EngineCmd replaces buildkitd with another engine (--engine-cmd).
	EngineCmd string

	// CAURL and CAFingerprint are the CA API the engine enrols and renews
	// at, and its root's fingerprint.
	CAURL, CAFingerprint string
	// CertTTL is the lifetime of the engine's certificate (--cert-ttl).
	CertTTL time.Duration

	// Drain, Stop and Kill bound the engine's shutdown (--drain-timeout,
	// --stop-timeout, --kill-timeout: the host's SIGTERM-to-SIGKILL
	// budget, which the engine fits the other two inside).
	Drain, Stop, Kill time.Duration
	// Idle, if positive, makes the engine exit on its own after that long
	// unused (--idle), so that a machine stops with no gateway alive.
	Idle time.Duration
}

// Args is the command line after the wakegate binary: Verb, then the
// flags of every field that is set.
func (c Command) Args() []string {
	args := []string{Verb}
	str := func(flag, v string) {
		if v != "" {
			args = append(args, flag, v)
		}
	}
	dur := func(flag string, d time.Duration) {
		if d > 0 {
			args = append(args, flag, d.String())
		}
	}
	str(StateFlag, c.State)
	str(ListenFlag, c.Listen)
	str("--addr-file", c.AddrFile)
	str("--listen-unix", c.ListenUnix)
	str("--name", c.Name)
	if c.Engine == KindDagger {
		str("--engine", c.Engine)
	}
	str("--buildkitd", c.Buildkitd)
	str("--engine-bin", c.EngineBin)
	str("--engine-net", c.EngineNet)
	str("--engine-cmd", c.EngineCmd)
	str("--ca-url", c.CAURL)
	str("--ca-fingerprint", c.CAFingerprint)
	dur("--cert-ttl", c.CertTTL)
	dur("--drain-timeout", c.Drain)
	dur("--stop-timeout", c.Stop)
	dur("--kill-timeout", c.Kill)
	dur("--idle", c.Idle)
	return args
}

// ListenOn is the --listen address for every interface at port, as a
// machine with an address of its own listens.
func ListenOn(port int) string { return "[::]:" + strconv.Itoa(port) }
