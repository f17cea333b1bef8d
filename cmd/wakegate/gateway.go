package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/fly"
	"github.com/wakegate/wakegate/gateway"
)

// shutdownGrace bounds how long open connections may drain at shutdown.
const shutdownGrace = 10 * time.Second

type gatewayFlags struct {
	caDir, listen, admin, provider, state, buildkitd, sans, logLevel string
	caListen, caSANs, passwordFile, flyApp, flyPool, engineCAURL     string
	execStart, execStop, execStatus, prefer                          string
	engineKind, engineBin                                            string
	oidcIssuer, oidcAudience, policyFile                             string
	softLimit, hardLimit, minRunning, maxConnsPerIdentity            int
	flySuspend                                                       bool
	engines                                                          int
	idle, wakeTimeout, maxClientTTL, clientTTL, certTTL              time.Duration
	flyStopWait                                                      time.Duration
}

func runGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("gateway", "gateway --ca-dir CA --state DIR [flags]", `
Runs the mTLS gateway. It accepts TLS 1.3 connections that present a client
certificate from the CA, routes each client identity to its engine, wakes a
stopped engine on demand (holding the connection until BuildKit answers),
proxies the stream, and stops the engine --idle after its last connection
closes.

It embeds the certificate authority of --ca-dir (smallstep's, with its
database) and serves the step-ca API on --ca-listen, where 'wakegate connect
--token' enrols and every client renews. With --policy, a CI job enrols there
with its own OIDC token ('connect --oidc github'): no stored secret. The
policy decides who may connect, at enrolment and again at every handshake;
its file is re-read when it changes (within 2 s). Its own certificates are issued by
that authority and renewed at two thirds of their life. Every handshake is
checked against the CA's revocation records.

Provider "local" (the default) runs each engine as a 'wakegate engine'
process on this machine (the same entrypoint remote engine machines run),
with its cache under --state/engine-N; run as root with runc installed.
With --engine dagger they run Dagger's engine from --engine-bin, each in its
own mount, PID and network namespaces (docs/dagger.md).
Before stopping an idle engine the gateway asks the engine itself whether
anyone (through any gateway) still uses it. The admin address serves GET /healthz and GET /engines.`, stdout, stderr)
	var f gatewayFlags
	fs.StringVar(&f.caDir, "ca-dir", "", "CA directory made by 'certs init' (required)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8443", "address for client mTLS connections")
	fs.StringVar(&f.admin, "admin", "127.0.0.1:8444", `address of the admin HTTP endpoint ("" disables it)`)
	fs.StringVar(&f.provider, "provider", "local", `engine host: "local", "fly" or "exec"`)
	fs.StringVar(&f.execStart, "exec-start", "", "provider exec: shell command that starts engine $WAKEGATE_ENGINE and prints its host:port")
	fs.StringVar(&f.execStop, "exec-stop", "", "provider exec: shell command that stops engine $WAKEGATE_ENGINE")
	fs.StringVar(&f.execStatus, "exec-status", "", "provider exec: optional shell command that prints running or stopped")
	fs.StringVar(&f.flyApp, "fly-app", "", "Fly app holding the engine machines (provider fly; token from $FLY_API_TOKEN)")
	fs.StringVar(&f.flyPool, "fly-pool", "engines", "engine pool within the Fly app (machine metadata "+fly.PoolKey+")")
	fs.BoolVar(&f.flySuspend, "fly-suspend", false, "suspend idle Fly machines instead of stopping them (faster wakes; see docs/fly.md)")
	fs.DurationVar(&f.flyStopWait, "fly-stop-wait", 30*time.Second, "provider fly: how long one stop is waited for; an engine still draining then stays billed as stopping and is asked again (at most 50s)")
	fs.StringVar(&f.engineCAURL, "engine-ca-url", "", "the CA API's URL as remote engines reach it (default: the --ca-listen URL)")
	fs.IntVar(&f.engines, "engines", 1, "number of engines in the pool (local and exec)")
	fs.IntVar(&f.softLimit, "soft-limit", gateway.DefaultPolicy.Soft, "sessions an engine takes before clients go to another")
	fs.IntVar(&f.hardLimit, "hard-limit", gateway.DefaultPolicy.Hard, "most sessions an engine ever takes; beyond, connections are held")
	fs.StringVar(&f.prefer, "prefer", "home", `"home": wake a client's home engine (its cache) when it is free; "warm": any running engine first`)
	fs.IntVar(&f.minRunning, "min-running", 0, "engines kept running when idle")
	fs.IntVar(&f.maxConnsPerIdentity, "max-conns-per-identity", gateway.DefaultMaxConnsPerIdentity, "most connections one client identity may have open (held, proxied and wake requests together); beyond, connections are refused")
	fs.StringVar(&f.state, "state", "", "directory for the engines' persistent state (required for local)")
	fs.DurationVar(&f.idle, "idle", 30*time.Second, "stop an engine this long after its last connection closes")
	fs.DurationVar(&f.wakeTimeout, "wake-timeout", 60*time.Second, "give up on a wake (start and BuildKit answering) after this long")
	fs.StringVar(&f.buildkitd, "buildkitd", "", "buildkitd binary (default: $WAKEGATE_BUILDKITD, then beside wakegate, then $PATH)")
	fs.StringVar(&f.engineKind, "engine", "buildkit", "provider local: engine kind, buildkit or dagger (each Dagger engine in its own namespaces; see docs/dagger.md)")
	fs.StringVar(&f.engineBin, "engine-bin", "", "provider local, --engine dagger: directory holding dagger-engine, dagger-init and dnsname (default: $WAKEGATE_DAGGER_BIN)")
	fs.StringVar(&f.sans, "san", "", "extra comma-separated DNS names or IPs for the gateway's certificate")
	fs.StringVar(&f.caListen, "ca-listen", "127.0.0.1:9443", `address of the CA's HTTPS API ("" serves none)`)
	fs.StringVar(&f.caSANs, "ca-san", "", "extra comma-separated DNS names or IPs for the CA API's certificate")
	fs.StringVar(&f.passwordFile, "password-file", "", "file holding the CA password (default: $WAKEGATE_CA_PASSWORD)")
	fs.DurationVar(&f.maxClientTTL, "max-client-ttl", certs.MaxClientTTL, "longest client certificate the CA signs")
	fs.DurationVar(&f.clientTTL, "client-ttl", certs.DefaultClientTTL, "lifetime of client certificates that ask for none")
	fs.DurationVar(&f.certTTL, "cert-ttl", certs.ServerTTL, "lifetime of the gateway's and its local engines' certificates (renewed at two thirds)")
	fs.StringVar(&f.policyFile, "policy", "", "TOML file of who may connect (see 'wakegate help policy'); without it OIDC enrolment is off and every certificate of the CA is let in")
	fs.StringVar(&f.oidcIssuer, "oidc-issuer", certs.DefaultOIDCIssuer, "OIDC issuer whose CI job tokens the CA exchanges for client certificates (GitHub Enterprise Server: https://HOST/_services/token)")
	fs.StringVar(&f.oidcAudience, "oidc-audience", certs.DefaultOIDCAudience, "audience OIDC tokens must name (connect --oidc-audience)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args, stdout); err != nil {
		return helpOK(err)
	}
	if fs.NArg() > 0 {
		return usageError("gateway", "unexpected argument %q", fs.Arg(0))
	}
	if err := f.validate(); err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	var bin string
	switch {
	case f.provider == "local" && f.engineKind == string(engine.KindDagger):
		if err := engine.CheckDaggerHost(daggerBin(f.engineBin)); err != nil {
			return err
		}
	case f.provider == "local":
		if bin, err = findBuildkitd(f.buildkitd); err != nil {
			return err
		}
		if err := engine.CheckLocalHost(bin); err != nil {
			return err
		}
	}
	pol, err := loadPolicy(f.policyFile, f.oidcIssuer, log)
	if err != nil {
		return err
	}
	ca, err := loadCA(f.caDir, f.passwordFile)
	if err != nil {
		return err
	}
	self, err := wakegateBin()
	if err != nil {
		return err
	}
	fileLimit, err := raiseFileLimit()
	if err != nil {
		return err
	}
	limits := certs.DefaultAPILimits
	limits.MaxConns = caAPIConns(fileLimit)
	log.Info("open-files limit", "limit", fileLimit, "ca_api_max_conns", limits.MaxConns)
	caSvc, err := startCA(ca, f.caListen, f.caSANs, certs.AuthorityConfig{MaxClientTTL: f.maxClientTTL, DefaultClientTTL: f.clientTTL}, limits, f.certTTL, log)
	if err != nil {
		return err
	}
	defer caSvc.Close()
	if err := caSvc.auth.EnableOIDC(certs.OIDCConfig{
		Issuer: f.oidcIssuer, Audience: f.oidcAudience,
		Enabled: pol.enabled, Allow: pol.allowClaims, Log: log,
	}); err != nil {
		return err
	}
	stopPolicy := goBackground(pol.run)
	defer stopPolicy()
	rctx, stopRenewing := context.WithCancel(context.Background())
	defer stopRenewing()
	gwCert, err := caSvc.selfRenewing(rctx, "wakegate-gateway", serverSANs(f.listen, f.sans), log)
	if err != nil {
		return err
	}
	tlsCfg := certs.RefuseRevoked(certs.ServerTLS(gwCert.Current, ca.Pool()), caSvc.auth.IsRevoked)

	ec := &engine.Client{TLS: certs.ClientTLS(gwCert.Current, ca.Pool(), "")}
	provider, err := f.newProvider(ctx, ca, caSvc, self, bin, ec, log)
	if err != nil {
		return err
	}
	policy := gateway.Policy{Soft: f.softLimit, Hard: f.hardLimit, PreferWarm: f.prefer == "warm", MinRunning: f.minRunning}
	pool, err := gateway.NewPoolWithPolicy(ctx, provider, gateway.EngineConfig{
		Probe:       ec.Ready,
		BeforeStop:  ec.Busy,
		Idle:        f.idle,
		WakeTimeout: f.wakeTimeout,
		Log:         log,
	}, policy)
	if err != nil {
		return err
	}
	defer pool.Close()
	pool.WarmUp(ctx, log)
	srv, err := gateway.NewServer(gateway.Config{
		TLS:  tlsCfg,
		Pool: pool,
		Dial: ec.Dial,
		// A held connection may wait out a stop, then a whole wake.
		HoldTimeout:         f.wakeTimeout + time.Minute,
		Authorize:           pol.allow,
		MaxConnsPerIdentity: f.maxConnsPerIdentity,
		Log:                 log,
	})
	if err != nil {
		return err
	}

	caSvc.auth.OnKill(srv.CloseSerial)

	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", f.listen, err)
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	var admin *http.Server
	if f.admin != "" {
		aln, err := net.Listen("tcp", f.admin)
		if err != nil {
			srv.Shutdown(context.Background())
			return fmt.Errorf("gateway: admin listen on %s: %w", f.admin, err)
		}
		admin = &http.Server{Handler: gateway.AdminHandler(pool), ReadHeaderTimeout: 5 * time.Second}
		go func() { errc <- admin.Serve(aln) }()
		log.Info("admin listening", "addr", aln.Addr().String())
	}
	log.Info("gateway listening", "addr", ln.Addr().String(), "engines", f.engines, "provider", f.provider,
		"idle", f.idle.String(), "wake_timeout", f.wakeTimeout.String(), "ca_fingerprint", ca.Fingerprint())

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("gateway shutting down")
	case serveErr = <-errc:
		log.Error("gateway stopped serving", "err", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if admin != nil {
		admin.Shutdown(sctx)
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("gateway shutdown", "err", err)
	}
	pool.Close()
	log.Info("gateway stopped")
	if serveErr != nil && !errors.Is(serveErr, gateway.ErrServerClosed) && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}

func (f *gatewayFlags) validate() error {
	switch {
	case f.caDir == "":
		return usageError("gateway", "--ca-dir is required")
	case f.provider != "local" && f.provider != "fly" && f.provider != "exec":
		return usageError("gateway", "--provider %q is not supported; use local, fly or exec", f.provider)
	case f.provider == "exec" && (f.execStart == "" || f.execStop == ""):
		return usageError("gateway", "the exec provider needs --exec-start and --exec-stop")
	case f.provider == "local" && f.state == "":
		return usageError("gateway", "--state is required for the local provider")
	case f.engineKind != string(engine.KindBuildkit) && f.engineKind != string(engine.KindDagger):
		return usageError("gateway", "--engine must be buildkit or dagger")
	case f.engineKind == string(engine.KindDagger) && f.provider != "local":
		return usageError("gateway", "--engine dagger is for the local provider; a %s engine machine is given --engine dagger by its own command", f.provider)
	case f.flyStopWait <= 0 || f.flyStopWait > 50*time.Second:
		// One stop round of the gateway is bounded by a minute.
		return usageError("gateway", "--fly-stop-wait must be between 0 and 50s")
	case f.provider == "fly" && f.flyApp == "":
		return usageError("gateway", "--fly-app is required for the fly provider")
	case f.provider == "fly" && os.Getenv("FLY_API_TOKEN") == "":
		return usageError("gateway", "the fly provider needs a Fly API token in $FLY_API_TOKEN")
	case f.oidcAudience == "":
		return usageError("gateway", "--oidc-audience cannot be empty")
	case !strings.HasPrefix(f.oidcIssuer, "https://"):
		return usageError("gateway", "--oidc-issuer %q must be an https URL", f.oidcIssuer)
	case f.caListen == "":
		return usageError("gateway", "engines enrol at the CA API: --ca-listen cannot be empty")
	case f.engines < 1:
		return usageError("gateway", "--engines must be at least 1")
	case f.prefer != "home" && f.prefer != "warm":
		return usageError("gateway", "--prefer must be home or warm")
	case f.softLimit < 1 || f.hardLimit < f.softLimit:
		return usageError("gateway", "need 1 <= --soft-limit <= --hard-limit")
	case f.minRunning < 0:
		return usageError("gateway", "--min-running must not be negative")
	case f.maxConnsPerIdentity < 1:
		return usageError("gateway", "--max-conns-per-identity must be at least 1")
	case f.idle <= 0:
		return usageError("gateway", "--idle must be positive")
	case f.wakeTimeout <= 0:
		return usageError("gateway", "--wake-timeout must be positive")
	case f.certTTL < certs.MinTTL || f.certTTL > certs.ServerTTL:
		return usageError("gateway", "--cert-ttl must be between %s and %s", certs.MinTTL, certs.ServerTTL)
	case f.maxClientTTL < certs.MinTTL:
		return usageError("gateway", "--max-client-ttl must be at least %s", certs.MinTTL)
	case f.clientTTL < certs.MinTTL || f.clientTTL > f.maxClientTTL:
		return usageError("gateway", "--client-ttl must be between %s and --max-client-ttl", certs.MinTTL)
	}
	if _, _, err := net.SplitHostPort(f.listen); err != nil {
		return usageError("gateway", "--listen %q: %v", f.listen, err)
	}
	if f.caListen != "" {
		if _, _, err := net.SplitHostPort(f.caListen); err != nil {
			return usageError("gateway", "--ca-listen %q: %v", f.caListen, err)
		}
	}
	if f.admin != "" {
		if _, _, err := net.SplitHostPort(f.admin); err != nil {
			return usageError("gateway", "--admin %q: %v", f.admin, err)
		}
	}
	return nil
}

// serverSANs names the gateway in its certificate: loopback always, the
// listen host when it is specific, and whatever the operator adds.
func serverSANs(listen, extra string) []string {
	sans := []string{"localhost", "127.0.0.1", "::1"}
	if host, _, err := net.SplitHostPort(listen); err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			sans = append(sans, host)
		}
	}
	for _, s := range strings.Split(extra, ",") {
		if s = strings.TrimSpace(s); s != "" {
			sans = append(sans, s)
		}
	}
	return sans
}

// newProvider builds the engine host. Engines enrol at the CA API with a
// single-use token from the servers provisioner: local engines get it in
// their environment at spawn, Fly machines in their config just before
// each start.
func (f *gatewayFlags) newProvider(ctx context.Context, ca *certs.CA, caSvc *caService, self, bkd string, ec *engine.Client, log *slog.Logger) (gateway.Provider, error) {
	caURL := f.engineCAURL
	if caURL == "" {
		caURL = caSvc.url
		if f.provider == "local" {
			caURL = caSvc.internalURL // never waits behind the public API's callers
		}
	}
	// An engine's certificate is checked against the CA's records at every
	// dial, as a client's is at the gateway's port.
	ec.IsRevoked = caSvc.auth.IsRevoked
	token := func(name, id string) (string, error) {
		return ca.Servers.Token(name, f.engineSANs(name, id), 10*time.Minute)
	}
	if f.provider == "fly" {
		return fly.New(ctx, fly.Config{
			App: f.flyApp, Token: os.Getenv("FLY_API_TOKEN"), Pool: f.flyPool, Suspend: f.flySuspend,
			StartTimeout: f.wakeTimeout, StopTimeout: f.flyStopWait, Busy: ec.Busy, Log: log,
			// A suspended engine resumes with the certificate it enrolled
			// for; past a quarter of its life it is cold-started instead.
			ResumeWithin: certs.ServerTTL / 4,
			Prepare: func(_ context.Context, id string) (map[string]string, error) {
				name := engine.EngineNamePrefix + id
				tok, err := token(name, id)
				return map[string]string{"WAKEGATE_TOKEN": tok, "WAKEGATE_ENGINE_NAME": name,
					"WAKEGATE_CA_URL": caURL, "WAKEGATE_CA_FINGERPRINT": ca.Fingerprint()}, err
			},
		})
	}
	if f.provider == "exec" {
		var ids []string
		for i := range f.engines {
			ids = append(ids, fmt.Sprintf("engine-%d", i))
		}
		// The command starts 'wakegate engine --name wakegate-$WAKEGATE_ENGINE'
		// with WAKEGATE_TOKEN in the machine's environment.
		return engine.NewExec(engine.ExecConfig{
			IDs: ids, Start: f.execStart, Stop: f.execStop, Status: f.execStatus,
			Token: func(id string) (string, error) { return token("wakegate-"+id, id) },
			Env:   []string{"WAKEGATE_CA_URL=" + caURL, "WAKEGATE_CA_FINGERPRINT=" + ca.Fingerprint()},
			Log:   log,
		})
	}
	kind := engine.Kind(f.engineKind)
	if bkd == "" && kind != engine.KindDagger {
		return nil, errors.New("buildkitd not found: run 'make tools' to build it into bin/, or pass --buildkitd PATH")
	}
	// A local engine's host is this gateway, whose stop gives up (and kills
	// the engine's process group) after its default 60 s: drain, stop and
	// the margin fit in that as --kill-timeout.
	return engine.NewLocal(engine.LocalConfig{
		Dir: f.state, N: f.engines, Wakegate: self, Buildkitd: bkd, Engine: kind, EngineBin: daggerBin(f.engineBin),
		EngineArgs: []string{"--ca-url", caURL, "--ca-fingerprint", ca.Fingerprint(),
			"--drain-timeout", "20s", "--stop-timeout", "30s", "--kill-timeout", "60s", "--cert-ttl", f.certTTL.String()},
		Token: func(id string) (string, error) { return token("wakegate-"+id, id) },
		Log:   log,
	})
}

// wakegateBin is the binary that runs local engines: $WAKEGATE_BIN, or this
// executable.
func wakegateBin() (string, error) {
	if p := os.Getenv("WAKEGATE_BIN"); p != "" {
		return p, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the wakegate binary for local engines (set WAKEGATE_BIN): %w", err)
	}
	return p, nil
}

// findBuildkitd resolves the buildkitd binary: the flag, then
// $WAKEGATE_BUILDKITD, then a buildkitd beside this executable (make puts
// both in bin/), then $PATH.
func findBuildkitd(flagValue string) (string, error) {
	for _, p := range []string{flagValue, os.Getenv("WAKEGATE_BUILDKITD")} {
		if p != "" {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("buildkitd %s: %w", p, err)
			}
			return p, nil
		}
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "buildkitd")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("buildkitd"); err == nil {
		return p, nil
	}
	return "", errors.New("buildkitd not found: run 'make tools' to build it into bin/, or pass --buildkitd PATH")
}
