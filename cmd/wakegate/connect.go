package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/connect"
	"github.com/wakegate/wakegate/wire"
)

// childStopGrace is how long CMD gets to exit after SIGTERM when connect is
// interrupted, before it is killed.
const childStopGrace = 10 * time.Second

// connectFlags are connect's options.
type connectFlags struct {
	gateway, creds, caURL, caFP, token, tokenFile, listen, serverName string
	oidc, oidcAudience, pidFile, logFile, logLevel                    string
	certTTL, waitTimeout                                              time.Duration
	wait, background, listenSet, unsafeListen                         bool
	listenAddr                                                        connect.ListenAddress // --listen, parsed by validate
}

func runConnect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("connect", "connect --gateway HOST:PORT (--oidc github | --token T | --creds DIR) [--ca-url URL --ca-fingerprint FP] [--wait | --background --pid-file FILE | -- CMD [ARGS...]]", `
Runs the sidecar: plain connections on --listen (for buildctl, buildx or
Dagger), carried over mTLS to the gateway.

Credentials come from one of:
  --oidc github   in a GitHub Actions job with 'permissions: id-token: write':
                  the job's own OIDC token (audience --oidc-audience) is
                  exchanged at the CA API at --ca-url for a certificate that
                  names the repository. No stored secret. Renewal asks GitHub
                  for a fresh token and enrols again.
  --token T       a single-use token ('wakegate certs token'; also
                  $WAKEGATE_TOKEN or --token-file) exchanged at --ca-url.
  --creds DIR     client.crt, client.key and ca.crt from 'wakegate certs issue'.
The CA is trusted by its root's fingerprint (--ca-fingerprint). With --ca-url
the certificate is renewed at two thirds of its life; open connections are
not disturbed.

Modes:
  -- CMD ARGS     wake the engine and wait until it is ready (printing
                  progress), run CMD with BUILDKIT_HOST and
                  _EXPERIMENTAL_DAGGER_RUNNER_HOST set to the sidecar's
                  address (tcp://HOST:PORT or unix:///PATH), keep the engine
                  awake while CMD runs, and exit with CMD's status.
  --background    enrol once, wake the engine and wait until it is ready, then
                  detach and serve (its log goes to --log-file): prints the
                  address, writes the sidecar's process id to --pid-file and,
                  where $GITHUB_ENV is set, appends BUILDKIT_HOST and
                  _EXPERIMENTAL_DAGGER_RUNNER_HOST to it. The engine stays awake
                  while the sidecar runs. Stop it with: kill $(cat FILE)
  --wait          wake the engine, wait until it is ready, and exit 0.
  (none)          serve until interrupted; a connection to a stopped engine is
                  held by the gateway while it wakes.
With -- CMD or --background and no --listen, a free loopback port is chosen,
so that concurrent jobs on one runner never collide.

Listening (whoever connects to the sidecar builds as this job):
  --listen HOST:PORT       TCP on a loopback host: 127.0.0.1 (or 127.x.y.z),
                           ::1 or localhost. Any other host (0.0.0.0, :: and
                           an empty host included) is reachable from other
                           machines, and refused unless --unsafe-listen.
  --listen unix:///PATH    a unix socket only this user may open (mode 0600,
                           never wider), for runners shared with other users;
                           BuildKit and Dagger clients accept unix:// hosts.
                           A relative PATH is made absolute. A stale socket at
                           PATH is replaced; a live one, or anything that is
                           not a socket, is refused. It is removed when the
                           sidecar stops.`, stdout, stderr)
	var f connectFlags
	fs.StringVar(&f.gateway, "gateway", "", "gateway address HOST:PORT (required)")
	fs.StringVar(&f.oidc, "oidc", "", `enrol with the CI job's OIDC token: "github" (GitHub Actions)`)
	fs.StringVar(&f.oidcAudience, "oidc-audience", certs.DefaultOIDCAudience, "audience of the OIDC token (the gateway's --oidc-audience)")
	fs.StringVar(&f.creds, "creds", "", "credentials directory from 'wakegate certs issue --out'")
	fs.StringVar(&f.caURL, "ca-url", "", "the gateway's CA API, https://HOST:PORT, to enrol (--oidc, --token) and to renew")
	fs.StringVar(&f.caFP, "ca-fingerprint", "", "SHA-256 fingerprint of the CA root ('wakegate certs fingerprint'), with --oidc or --token")
	fs.StringVar(&f.token, "token", "", "single-use enrolment token (prefer $WAKEGATE_TOKEN or --token-file: arguments are visible to other users)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the single-use enrolment token")
	fs.DurationVar(&f.certTTL, "cert-ttl", 0, "lifetime to ask for when enrolling (default: the CA's, 1h)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:9080", "loopback HOST:PORT or unix:///PATH for local clients (default with -- CMD or --background: a free loopback port)")
	fs.BoolVar(&f.unsafeListen, "unsafe-listen", false, "allow a --listen address other machines can reach: they build as this job")
	fs.StringVar(&f.serverName, "server-name", "", "name to verify in the gateway's certificate (default: the --gateway host)")
	fs.BoolVar(&f.wait, "wait", false, "wake the engine, wait until it is ready, then exit")
	fs.BoolVar(&f.background, "background", false, "wake the engine, wait until it is ready, then detach and serve (needs --pid-file)")
	fs.StringVar(&f.pidFile, "pid-file", "", "with --background: file to write the sidecar's process id to")
	fs.StringVar(&f.logFile, "log-file", "", "with --background: the sidecar's log (default: the --pid-file path with .log added)")
	fs.DurationVar(&f.waitTimeout, "wait-timeout", 10*time.Minute, "give up enrolling and waiting for the engine after this long")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args, stdout); err != nil {
		return helpOK(err)
	}
	fs.Visit(func(fl *flag.Flag) { f.listenSet = f.listenSet || fl.Name == "listen" })
	cmdArgs := fs.Args()
	if !f.listenSet && (f.background || len(cmdArgs) > 0) {
		f.listen = "127.0.0.1:0"
	}
	if err := f.validate(cmdArgs); err != nil {
		return err
	}
	if f.background && !isBackgroundChild() {
		return startBackground(ctx, args, &f, stdout, stderr)
	}
	return serveConnect(ctx, &f, cmdArgs, stdout, stderr)
}

func (f *connectFlags) validate(cmdArgs []string) error {
	sources := 0
	for _, set := range []bool{f.oidc != "", f.creds != "", f.token != "" || f.tokenFile != ""} {
		if set {
			sources++
		}
	}
	envToken := sources == 0 && os.Getenv("WAKEGATE_TOKEN") != ""
	switch {
	case f.gateway == "":
		return usageError("connect", "--gateway is required")
	case sources == 0 && !envToken:
		return usageError("connect", "credentials are required: --oidc github (in GitHub Actions), a token (--token, --token-file or $WAKEGATE_TOKEN) with --ca-url and --ca-fingerprint, or --creds DIR")
	case sources > 1:
		return usageError("connect", "use one of --oidc, --token (or --token-file) and --creds")
	case f.oidc != "" && f.oidc != "github":
		return usageError("connect", "--oidc %q is not supported; use --oidc github", f.oidc)
	case f.oidc != "" && (f.caURL == "" || f.caFP == ""):
		return usageError("connect", "--oidc needs --ca-url and --ca-fingerprint (the gateway's CA API, and what 'wakegate certs fingerprint' prints)")
	case f.oidc != "" && f.oidcAudience == "":
		return usageError("connect", "--oidc-audience cannot be empty")
	case f.wait && len(cmdArgs) > 0:
		return usageError("connect", "--wait and a command are exclusive: a command already waits")
	case f.background && (f.wait || len(cmdArgs) > 0):
		return usageError("connect", "--background is exclusive with --wait and a command")
	case f.background && f.pidFile == "":
		return usageError("connect", "--background needs --pid-file FILE (stop the sidecar with: kill $(cat FILE))")
	case !f.background && (f.pidFile != "" || f.logFile != ""):
		return usageError("connect", "--pid-file and --log-file go with --background")
	case f.waitTimeout <= 0:
		return usageError("connect", "--wait-timeout must be positive")
	}
	if _, _, err := net.SplitHostPort(f.gateway); err != nil {
		return usageError("connect", "--gateway %q: %v", f.gateway, err)
	}
	addr, err := connect.ParseListenAddress(f.listen)
	if err != nil {
		return usageError("connect", "--listen %q: %v", f.listen, err)
	}
	if !addr.LocalOnly() && !f.unsafeListen {
		return usageError("connect", "--listen %s is reachable from other machines: anyone who reaches it uses this job's identity; listen on 127.0.0.1 or unix:///path, or pass --unsafe-listen", f.listen)
	}
	f.listenAddr = addr
	return nil
}

// serveConnect enrols, then runs the mode the flags chose. A background
// child tells its parent how it went through rep.
func serveConnect(ctx context.Context, f *connectFlags, cmdArgs []string, stdout, stderr io.Writer) error {
	rep, err := newReadyReporter(f)
	if err != nil {
		return err
	}
	defer rep.close()
	stderr = rep.progress(stderr)
	err = serveConnectMode(ctx, f, cmdArgs, rep, stdout, stderr)
	if err != nil {
		rep.fail(err)
	}
	return err
}

func serveConnectMode(ctx context.Context, f *connectFlags, cmdArgs []string, rep *readyReporter, stdout, stderr io.Writer) error {
	if f.serverName == "" {
		f.serverName, _, _ = net.SplitHostPort(f.gateway)
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	// The listener opens before enrolment: a port in use or a path taken
	// fails without spending the job's token. Clients that connect before
	// Serve wait in the backlog.
	var ln net.Listener
	if !f.wait {
		if ln, err = connect.Listen(f.listenAddr); err != nil {
			return err
		}
		defer ln.Close() // when Serve never ran; closing twice is harmless
		if !f.listenAddr.LocalOnly() {
			log.Warn("--unsafe-listen: other machines can reach the sidecar, and whoever connects builds as this job", "addr", ln.Addr().String())
		}
	}
	wctx, cancelWait := context.WithTimeout(ctx, f.waitTimeout)
	defer cancelWait()
	renewer, roots, err := clientIdentity(wctx, f, stderr, log)
	if err != nil {
		return err
	}
	stopRenewing := goBackground(renewer.Run)
	defer stopRenewing()
	sc, err := connect.New(connect.Config{
		Gateway: f.gateway,
		TLS:     certs.ClientTLS(renewer.Current, roots, f.serverName),
		Log:     log,
	})
	if err != nil {
		return err
	}
	waitReady := func() (io.Closer, error) { return waitWithProgress(wctx, sc, stderr) }
	if f.wait {
		hold, err := waitReady()
		if err != nil {
			return err
		}
		return hold.Close()
	}

	served := make(chan error, 1)
	go func() { served <- sc.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		sc.Shutdown(sctx)
		<-served
	}()
	addr := connect.ClientAddress(ln)
	serve := func() error {
		log.Info("connect listening", "addr", ln.Addr().String(), "gateway", f.gateway)
		select {
		case <-ctx.Done():
			log.Info("connect stopping", "addr", ln.Addr().String())
			return nil
		case err := <-served:
			return err
		}
	}
	if len(cmdArgs) == 0 && !f.background {
		return serve()
	}
	hold, err := waitReady()
	if err != nil {
		return err
	}
	defer hold.Close()
	if f.background {
		// The wake connection stays open while the sidecar serves: the
		// engine stays awake between the job's steps.
		rep.ready(addr)
		return serve()
	}
	return runChild(ctx, cmdArgs, addr, stdout, stderr)
}

// waitWithProgress wakes the engine, printing a line per progress event and
// per retry, so a CI log shows what the wait is doing.
func waitWithProgress(ctx context.Context, sc *connect.Sidecar, w io.Writer) (io.Closer, error) {
	began := time.Now()
	fmt.Fprintln(w, "wakegate: waking engine…")
	hold, err := sc.WaitReady(ctx,
		func(e wire.Event) {
			switch e.Kind {
			case wire.Waking:
				fmt.Fprintf(w, "wakegate: engine %s %s (%.0fs)\n", e.Engine, e.State, time.Since(began).Seconds())
			case wire.Ready:
				fmt.Fprintf(w, "wakegate: engine %s ready after %.1fs\n", e.Engine, time.Since(began).Seconds())
			case wire.Failed:
				fmt.Fprintf(w, "wakegate: engine %s failed to wake: %s\n", e.Engine, e.Message)
			}
		},
		func(err error, after time.Duration) {
			fmt.Fprintf(w, "wakegate: %v; retrying in %s\n", err, after)
		})
	var refusal connect.Refusal
	switch {
	case errors.As(err, &refusal):
		return nil, err // the gateway's words say it all
	case err != nil:
		return nil, fmt.Errorf("engine not ready: %w", err)
	}
	return hold, nil
}

// runChild runs CMD with the BuildKit and Dagger address variables set and
// returns its exit status as an exitError. An interrupt reaches CMD as
// SIGTERM first.
func runChild(ctx context.Context, args []string, addr string, stdout, stderr io.Writer) error {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = os.Stdin
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(os.Environ(), "BUILDKIT_HOST="+addr, "_EXPERIMENTAL_DAGGER_RUNNER_HOST="+addr)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = childStopGrace
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee):
		if code := ee.ExitCode(); code >= 0 {
			return exitError(code)
		}
		return exitError(128 + int(syscall.SIGTERM)) // killed by a signal
	default:
		return fmt.Errorf("run %s: %w", args[0], err)
	}
}
