package main

import (
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/identity"
)

// engineFlags are the options of 'wakegate engine', grouped by what they
// configure. Hosts build this command line with enginecmd.Command;
// TestEngineCommandIsWhatTheEngineParses holds the two together.
type engineFlags struct {
	front    engineFrontFlags   // the mTLS port for the gateway
	enrol    engineEnrolFlags   // the certificate: CA, name, token, lifetime
	backend  engineBackendFlags // the engine process and its state
	life     engineLifeFlags    // idle self-exit and the shutdown budget
	logLevel string
	// logFormat is text or json.
	logFormat string
}

type engineFrontFlags struct {
	listen, addrFile string
	unix             string // the unix front's path, "" for none
	allow            string // gateway names, comma-separated
}

type engineEnrolFlags struct {
	name, caURL, caFP, tokenFile string
	certTTL                      time.Duration
}

type engineBackendFlags struct {
	state, buildkitd, kind, engineBin, engineNet, engineCmd string
	userConfig, snapshotter                                 string
}

type engineLifeFlags struct {
	idle, drain, stopTimeout, killTimeout time.Duration
}

func (f *engineFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.front.listen, "listen", "127.0.0.1:8372", "mTLS address for the gateway")
	fs.StringVar(&f.front.addrFile, "addr-file", "", "write the address actually listened on to this file")
	fs.StringVar(&f.front.unix, "listen-unix", "", "also serve on this unix socket, without TLS, mode 0600, only to processes of this user: for a gateway on this machine running as this user (local engines)")
	fs.StringVar(&f.front.allow, "allow", identity.GatewayName, "comma-separated gateway names that may connect (each must also hold a gateway certificate)")

	fs.StringVar(&f.enrol.name, flagIdentity, envOr("WAKEGATE_ENGINE_NAME", identity.EngineName("0")), "this engine's identity, its certificate's common name, starting with "+identity.EngineNamePrefix+" (default: $WAKEGATE_ENGINE_NAME)")
	// Hosts running an engine of the previous release's command line
	// (enginecmd) still pass --name.
	renamed(fs, "name", flagIdentity)
	fs.StringVar(&f.enrol.caURL, "ca-url", os.Getenv("WAKEGATE_CA_URL"), "the gateway's CA API, to enrol and renew (default: $WAKEGATE_CA_URL)")
	fs.StringVar(&f.enrol.caFP, "ca-fingerprint", os.Getenv("WAKEGATE_CA_FINGERPRINT"), "SHA-256 fingerprint of the CA root (default: $WAKEGATE_CA_FINGERPRINT)")
	fs.StringVar(&f.enrol.tokenFile, "token-file", "", "file holding the single-use enrolment token (default: $WAKEGATE_TOKEN)")
	fs.DurationVar(&f.enrol.certTTL, "cert-ttl", certs.ServerTTL, "lifetime of this engine's certificate (renewed at two thirds)")

	fs.StringVar(&f.backend.state, "state", "", "engine state directory: the cache volume (required)")
	fs.StringVar(&f.backend.buildkitd, "buildkitd", "", "buildkitd binary (default: $WAKEGATE_BUILDKITD, then beside wakegate, then $PATH)")
	fs.StringVar(&f.backend.kind, "engine", "buildkit", "engine kind: buildkit or dagger")
	fs.StringVar(&f.backend.engineBin, "engine-bin", "", "--engine dagger: directory holding dagger-engine, dagger-init and dnsname (default: $WAKEGATE_DAGGER_BIN)")
	fs.StringVar(&f.backend.engineNet, "engine-net", envOr("WAKEGATE_ENGINE_NET", string(engine.NetPrivate)), "--engine dagger: private (own network namespace, loopback only) or host (the machine's network, for a machine of its own) (default: $WAKEGATE_ENGINE_NET, then private)")
	fs.StringVar(&f.backend.engineCmd, "engine-cmd", "", "engine command replacing buildkitd, space-separated, with {socket}, {root}, {config}")
	fs.StringVar(&f.backend.userConfig, "buildkitd-config", "", "your own buildkitd.toml instead of the generated one")
	fs.StringVar(&f.backend.snapshotter, "snapshotter", "", "BuildKit snapshotter (default: overlayfs where supported, else native)")

	fs.DurationVar(&f.life.idle, "idle", 0, "exit after this long with no connections and no builds (0: never)")
	fs.DurationVar(&f.life.drain, "drain-timeout", 10*time.Minute, "at shutdown, how long running builds may finish")
	fs.DurationVar(&f.life.stopTimeout, "stop-timeout", time.Minute, "how long the engine process may take to stop after SIGTERM")
	fs.DurationVar(&f.life.killTimeout, "kill-timeout", 0, "the host's budget from its SIGTERM to its SIGKILL (Fly: kill_timeout); drain and stop are fitted inside it (0: none)")

	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	logFormatVar(fs, &f.logFormat)
}

// parseEngineFlags parses and judges args; -h prints help and returns
// errHelp.
func parseEngineFlags(args []string, stdout, stderr io.Writer) (*engineFlags, error) {
	fs := newFlags("engine", "engine --state DIR --ca-url URL --ca-fingerprint FP [--listen ADDR] [flags]", engineHelp, stdout, stderr)
	var f engineFlags
	f.define(fs)
	if err := parse(fs, args, stdout); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usageError("engine", "unexpected argument %q", fs.Arg(0))
	}
	return &f, f.validate()
}

// validate judges the flags on their own; plan judges them against the
// machine.
func (f *engineFlags) validate() error {
	// Absolute: BuildKit's socket is a unix:// URL, where a relative path
	// would read as a host name.
	if f.backend.state != "" {
		if abs, err := filepath.Abs(f.backend.state); err == nil {
			f.backend.state = abs
		}
	}
	if f.front.unix != "" {
		if abs, err := filepath.Abs(f.front.unix); err == nil {
			f.front.unix = abs
		}
	}
	switch {
	case f.backend.state == "":
		return usageError("engine", "--state is required")
	case f.enrol.caURL == "" || f.enrol.caFP == "":
		return usageError("engine", "--ca-url and --ca-fingerprint (or $WAKEGATE_CA_URL and $WAKEGATE_CA_FINGERPRINT) are required")
	case !strings.HasPrefix(f.enrol.name, identity.EngineNamePrefix):
		return usageError("engine", "--identity must start with %s", identity.EngineNamePrefix)
	case f.enrol.certTTL < certs.MinTTL || f.enrol.certTTL > certs.ServerTTL:
		return usageError("engine", "--cert-ttl must be between %s and %s", certs.MinTTL, certs.ServerTTL)
	case f.life.idle < 0 || f.life.drain <= 0 || f.life.stopTimeout <= 0 || f.life.killTimeout < 0:
		return usageError("engine", "--idle, --drain-timeout, --stop-timeout and --kill-timeout must not be negative")
	case f.backend.kind == string(engine.KindDagger) && f.backend.engineCmd != "":
		return usageError("engine", "--engine dagger and --engine-cmd exclude each other")
	}
	if _, err := engine.ParseKind(f.backend.kind); err != nil {
		return usageError("engine", "--engine: %v", err)
	}
	if _, err := engine.ParseNet(f.backend.engineNet); err != nil {
		return usageError("engine", "--engine-net: %v", err)
	}
	if _, _, err := net.SplitHostPort(f.front.listen); err != nil {
		return usageError("engine", "--listen %q: %v", f.front.listen, err)
	}
	if f.front.unix != "" {
		if err := engine.CheckSocketPath(f.front.unix); err != nil {
			return usageError("engine", "--listen-unix: %v", err)
		}
	}
	if _, err := parseLogLevel(f.logLevel); err != nil {
		return usageError("engine", "%v", err)
	}
	if err := checkLogFormat(f.logFormat); err != nil {
		return usageError("engine", "%v", err)
	}
	return nil
}

// enginePlan is everything 'wakegate engine' needs before it opens its
// port and spends its token, each part judged.
type enginePlan struct {
	cfg   engine.Config // all but TLS, which comes from the enrolment
	token string
}

// plan resolves the engine process on this machine, judges the engine's
// whole configuration and reads the token: whatever can fail here fails
// with the token unspent.
func (f *engineFlags) plan() (*enginePlan, error) {
	kind, _ := engine.ParseKind(f.backend.kind)
	netMode, _ := engine.ParseNet(f.backend.engineNet)
	backend := engine.Buildkitd{Kind: kind, Dir: f.backend.state, Snapshotter: f.backend.snapshotter}
	switch {
	case kind == engine.KindDagger:
		backend.EngineBin, backend.Net = daggerBin(f.backend.engineBin), netMode
		if err := engine.CheckDaggerHost(backend.EngineBin); err != nil {
			return nil, err
		}
	case f.backend.engineCmd != "":
		backend.Cmd = strings.Fields(f.backend.engineCmd)
	default:
		bin, err := findBuildkitd(f.backend.buildkitd)
		if err != nil {
			return nil, err
		}
		backend.Bin = bin
	}
	cfg := engine.Config{
		Backend:      backend,
		UserConfig:   f.backend.userConfig,
		Allow:        strings.Split(f.front.allow, ","),
		Idle:         f.life.idle,
		DrainTimeout: f.life.drain,
		StopTimeout:  f.life.stopTimeout,
		KillTimeout:  f.life.killTimeout,
	}
	// The kill budget, Dagger's minimum stop, the state directory and
	// --buildkitd-config.
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	token, err := readToken("", f.enrol.tokenFile)
	if err != nil {
		return nil, err
	}
	if token == "" {
		return nil, usageError("engine", "a single-use token is required ($WAKEGATE_TOKEN or --token-file)")
	}
	return &enginePlan{cfg: cfg, token: token}, nil
}
