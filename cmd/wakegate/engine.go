package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/engine"
)

const engineHelp = `
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

With --listen-unix PATH it also serves all of that on a unix socket, without
TLS: mode 0600 and only to processes of its own user, for a gateway on the
same machine running as that user (local engines get STATE/front.sock). The
socket file is removed when the engine exits.

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
timeout and pass it as --kill-timeout. See docs/dagger.md.`

func runEngine(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseEngineFlags(args, stdout, stderr)
	if err != nil {
		return helpOK(err)
	}
	plan, err := f.plan()
	if err != nil {
		return err
	}
	log, err := newFormatLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	// The port opens before the token is spent: an address in use costs
	// nothing. Connections wait in the backlog until Run serves them (from
	// the engine process's start; streams then wait for readiness).
	ln, err := net.Listen("tcp", f.front.listen)
	if err != nil {
		return fmt.Errorf("engine: listen on %s: %w", f.front.listen, err)
	}
	defer ln.Close() // when Run never ran; closing twice is harmless
	if f.front.unix != "" {
		uln, err := engine.ListenUnix(f.front.unix)
		if err != nil {
			return err
		}
		defer uln.Close() // which removes its file; Run closes it too
		plan.cfg.Unix = uln
	}
	id, err := enrolEngine(ctx, f.enrol, plan.token, log)
	if err != nil {
		return err
	}
	defer id.stop()
	cfg := plan.cfg
	cfg.TLS = certs.RefuseRevoked(certs.ServerTLS(id.renewer.Current, id.roots), id.revoked.IsRevoked)
	cfg.Log = log.With("engine", f.enrol.name)
	e, err := engine.New(cfg)
	if err != nil {
		return err
	}
	// The address file says the engine can answer: its host (the local
	// provider, an exec start script) hands the address to the gateway,
	// which probes at once.
	if f.front.addrFile != "" {
		if err := os.WriteFile(f.front.addrFile, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
			return fmt.Errorf("engine: write --addr-file: %w", err)
		}
	}
	log.Info("engine listening", "addr", ln.Addr().String())
	return e.Run(ctx, ln)
}

// engineIdentity is an enrolled engine's certificate, kept renewed, and
// the CA's revocation list, kept polled, until stop.
type engineIdentity struct {
	renewer *certs.Renewer
	roots   *x509.CertPool
	revoked *certs.RevocationPoller
	stop    func()
}

// enrolEngine spends the engine's single-use token at the CA API for its
// certificate, which must carry the engine's --identity.
func enrolEngine(ctx context.Context, f engineEnrolFlags, token string, log *slog.Logger) (*engineIdentity, error) {
	enr, err := certs.Enroll(ctx, f.caURL, f.caFP, token, f.certTTL)
	if err != nil {
		return nil, err
	}
	if cn := enr.Cert.Leaf.Subject.CommonName; cn != f.name {
		return nil, fmt.Errorf("the token was for %q, not this engine's --identity %q", cn, f.name)
	}
	renewer, err := certs.NewRenewer(f.name, enr.Cert, enr.Renew, log)
	if err != nil {
		return nil, err
	}
	// The engine does not hold the CA's database: it polls the CA's list of
	// revoked serials, so a revoked gateway certificate is refused within
	// two seconds.
	revoked := certs.NewRevocationPoller(f.caURL, enr.Roots, 2*time.Second, log)
	if err := revoked.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	stop := goBackground(renewer.Run, revoked.Run)
	return &engineIdentity{renewer: renewer, roots: enr.Roots, revoked: revoked, stop: stop}, nil
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
