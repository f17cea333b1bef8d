package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/identity"
)

func runEngine(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("engine", "engine --state DIR --ca-url URL --ca-fingerprint FP [--listen ADDR] [flags]", `
Runs an engine machine: buildkitd, Dagger's engine (--engine dagger) or
another engine (--engine-cmd) on a unix socket inside DIR, with its cache in
DIR/root, exposed on --listen over mTLS to the gateway only (a certificate
with the gateway role, which only the CA's servers provisioner issues, not
merely the gateway's name), refusing certificates the CA has revoked (its
list is polled every 2s). Its server certificate comes from a single-use
token (servers provisioner; $WAKEGATE_TOKEN or --token-file) exchanged at
--ca-url, and is renewed there at two thirds of its life. Its child
processes (buildkitd, build steps) do not inherit its token or other
secrets.

The same port answers GET /ready and GET /status (HTTP/1.1 over mTLS):
connections, builds in progress and cache usage, as JSON the gateway reads.

With --idle D it exits 0 after D with no connections and no builds in
progress, so a machine host records it stopped even with no gateway alive.
On SIGTERM or SIGINT it stops accepting, lets running builds finish (up to
--drain-timeout), closes connections, sends the engine one SIGTERM and waits
up to --stop-timeout, so the cache database is never left half written.
With --kill-timeout D (the host's SIGTERM-to-SIGKILL budget: Fly's
kill_timeout) the drain is shortened so that drain, stop and a 10s margin fit
in D; a --stop-timeout that cannot fit is refused at start. A cache database
that cannot be opened is set aside, loudly, and the engine starts empty.
Unless --buildkitd-config is given it writes buildkitd.toml with garbage
collection bounded by the volume's size, and uses the overlayfs snapshotter
where the volume supports it (native otherwise).

With --engine dagger it runs Dagger's engine from --engine-bin DIR (holding
dagger-engine, dagger-init and dnsname) in its own mount and PID namespaces,
and its own network namespace unless --engine-net host, so that what Dagger
does to its host at every start (iptables links, /etc/resolv.conf, sockets
under /run, a dnsmasq) stays inside; when it stops, nothing of it is left.
Its activity comes from Dagger's own metrics (client sessions, cache size)
and the front's connections; during the drain it keeps accepting, since a
Dagger client opens connections in the middle of a call. Dagger wipes its
cache at start unless its last stop was graceful: give the machine a kill
timeout and pass it as --kill-timeout. See docs/dagger.md.`, stdout, stderr)
	state := fs.String("state", "", "engine state directory: the cache volume (required)")
	listen := fs.String("listen", "127.0.0.1:8372", "mTLS address for the gateway")
	addrFile := fs.String("addr-file", "", "write the address actually listened on to this file")
	name := fs.String("name", envOr("WAKEGATE_ENGINE_NAME", "wakegate-engine-0"), "this engine's certificate name, starting with "+engine.EngineNamePrefix+" (default: $WAKEGATE_ENGINE_NAME)")
	bkd := fs.String("buildkitd", "", "buildkitd binary (default: $WAKEGATE_BUILDKITD, then beside wakegate, then $PATH)")
	kindFlag := fs.String("engine", "buildkit", "engine kind: buildkit or dagger")
	engineBin := fs.String("engine-bin", "", "--engine dagger: directory holding dagger-engine, dagger-init and dnsname (default: $WAKEGATE_DAGGER_BIN)")
	engineNet := fs.String("engine-net", envOr("WAKEGATE_ENGINE_NET", string(engine.NetPrivate)), "--engine dagger: private (own network namespace, loopback only) or host (the machine's network, for a machine of its own) (default: $WAKEGATE_ENGINE_NET, then private)")
	engineCmd := fs.String("engine-cmd", "", "engine command replacing buildkitd, space-separated, with {socket}, {root}, {config}")
	userConfig := fs.String("buildkitd-config", "", "your own buildkitd.toml instead of the generated one")
	snapshotter := fs.String("snapshotter", "", "BuildKit snapshotter (default: overlayfs where supported, else native)")
	allow := fs.String("allow", identity.GatewayName, "comma-separated gateway names that may connect (each must also hold a gateway certificate)")
	idle := fs.Duration("idle", 0, "exit after this long with no connections and no builds (0: never)")
	drain := fs.Duration("drain-timeout", 10*time.Minute, "at shutdown, how long running builds may finish")
	stopTimeout := fs.Duration("stop-timeout", time.Minute, "how long the engine process may take to stop after SIGTERM")
	killTimeout := fs.Duration("kill-timeout", 0, "the host's budget from its SIGTERM to its SIGKILL (Fly: kill_timeout); drain and stop are fitted inside it (0: none)")
	caURL := fs.String("ca-url", os.Getenv("WAKEGATE_CA_URL"), "the gateway's CA API, to enrol and renew (default: $WAKEGATE_CA_URL)")
	caFP := fs.String("ca-fingerprint", os.Getenv("WAKEGATE_CA_FINGERPRINT"), "SHA-256 fingerprint of the CA root (default: $WAKEGATE_CA_FINGERPRINT)")
	tokenFile := fs.String("token-file", "", "file holding the single-use enrolment token (default: $WAKEGATE_TOKEN)")
	certTTL := fs.Duration("cert-ttl", certs.ServerTTL, "lifetime of this engine's certificate (renewed at two thirds)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args, stdout); err != nil {
		return helpOK(err)
	}
	switch {
	case *state == "":
		return usageError("engine", "--state is required")
	case *caURL == "" || *caFP == "":
		return usageError("engine", "--ca-url and --ca-fingerprint (or $WAKEGATE_CA_URL and $WAKEGATE_CA_FINGERPRINT) are required")
	case !strings.HasPrefix(*name, engine.EngineNamePrefix):
		return usageError("engine", "--name must start with %s", engine.EngineNamePrefix)
	case *certTTL < certs.MinTTL || *certTTL > certs.ServerTTL:
		return usageError("engine", "--cert-ttl must be between %s and %s", certs.MinTTL, certs.ServerTTL)
	case *idle < 0 || *drain <= 0 || *stopTimeout <= 0 || *killTimeout < 0:
		return usageError("engine", "--idle, --drain-timeout, --stop-timeout and --kill-timeout must not be negative")
	}
	kind, err := engine.ParseKind(*kindFlag)
	if err != nil {
		return usageError("engine", "--engine: %v", err)
	}
	netMode, err := engine.ParseNet(*engineNet)
	if err != nil {
		return usageError("engine", "--engine-net: %v", err)
	}
	if kind == engine.KindDagger && *engineCmd != "" {
		return usageError("engine", "--engine dagger and --engine-cmd exclude each other")
	}
	if _, _, err := net.SplitHostPort(*listen); err != nil {
		return usageError("engine", "--listen %q: %v", *listen, err)
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	backend := engine.Buildkitd{Kind: kind, Dir: *state, Snapshotter: *snapshotter}
	switch {
	case kind == engine.KindDagger:
		backend.EngineBin, backend.Net = daggerBin(*engineBin), netMode
		if err := engine.CheckDaggerHost(backend.EngineBin); err != nil {
			return err
		}
	case *engineCmd != "":
		backend.Cmd = strings.Fields(*engineCmd)
	default:
		if backend.Bin, err = findBuildkitd(*bkd); err != nil {
			return err
		}
	}
	// Everything that can be judged before a token is spent or a socket
	// opens: the kill budget, Dagger's minimum stop.
	if err := engine.CheckStopBudget(kind, *drain, *stopTimeout, *killTimeout); err != nil {
		return err
	}
	token, err := readToken("", *tokenFile)
	if err != nil {
		return err
	}
	if token == "" {
		return usageError("engine", "a single-use token is required ($WAKEGATE_TOKEN or --token-file)")
	}
	enr, err := certs.Enroll(ctx, *caURL, *caFP, token, *certTTL)
	if err != nil {
		return err
	}
	if cn := enr.Cert.Leaf.Subject.CommonName; cn != *name {
		return fmt.Errorf("the token was for %q, not this engine's --name %q", cn, *name)
	}
	renewer, err := certs.NewRenewer(*name, enr.Cert, enr.Renew, log)
	if err != nil {
		return err
	}
	// The engine does not hold the CA's database: it polls the CA's list of
	// revoked serials, so a revoked gateway certificate is refused within
	// two seconds.
	revoked := certs.NewRevocationPoller(*caURL, enr.Roots, 2*time.Second, log)
	if err := revoked.Refresh(ctx); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	stopBackground := goBackground(renewer.Run, revoked.Run)
	defer stopBackground()

	e, err := engine.New(engine.Config{
		Backend:      backend,
		UserConfig:   *userConfig,
		TLS:          certs.RefuseRevoked(certs.ServerTLS(renewer.Current, enr.Roots), revoked.IsRevoked),
		Allow:        strings.Split(*allow, ","),
		Idle:         *idle,
		DrainTimeout: *drain,
		StopTimeout:  *stopTimeout,
		KillTimeout:  *killTimeout,
		Log:          log.With("engine", *name),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("engine: listen on %s: %w", *listen, err)
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
			ln.Close()
			return fmt.Errorf("engine: write --addr-file: %w", err)
		}
	}
	log.Info("engine listening", "addr", ln.Addr().String())
	return e.Run(ctx, ln)
}

// daggerBin is the directory of Dagger's binaries: the flag, then
// $WAKEGATE_DAGGER_BIN. engine.CheckDaggerBin says what to pass when both
// are empty.
func daggerBin(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return os.Getenv("WAKEGATE_DAGGER_BIN")
}

// runEngineNS is the hidden namespace init of a Dagger engine
// (engine.NSInit), which 'wakegate engine --engine dagger' re-executes this
// binary as. It logs to stderr, the engine's dagger.log.
func runEngineNS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, "info")
	if err != nil {
		return err
	}
	code, err := engine.NSInit(ctx, args, log.With("component", engine.NSInitCommand))
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError(code)
	}
	return nil
}
