package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

func runConnect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("connect", "connect --gateway HOST:PORT (--creds DIR | --ca-url URL --ca-fingerprint FP --token T) [--listen ADDR] [--wait | -- CMD [ARGS...]]", `
Runs the sidecar: plain TCP on --listen (for buildctl, buildx or Dagger),
carried over mTLS to the gateway.

Credentials come either from DIR (client.crt, client.key, ca.crt from
'wakegate certs issue'), or from a single-use token ('wakegate certs token';
also $WAKEGATE_TOKEN or --token-file) exchanged at the CA API at --ca-url,
trusted by its root's fingerprint: no long-lived secret on the CI machine.
With --ca-url the certificate is renewed there at two thirds of its life;
open connections are not disturbed.

With '-- CMD ARGS', connect first wakes the engine and waits until it is
ready (printing progress), then runs CMD with BUILDKIT_HOST and
_EXPERIMENTAL_DAGGER_RUNNER_HOST set to tcp://ADDR, keeps the engine awake
while CMD runs, and exits with CMD's status.

With --wait, connect wakes the engine, waits until it is ready and exits 0;
the engine then stays up for the gateway's idle period. Use it as a CI step
before the step that builds, while another 'connect' serves in the
background.

Without either, connect serves until interrupted; a connection to a stopped
engine is held by the gateway while it wakes.`, stdout, stderr)
	gw := fs.String("gateway", "", "gateway address HOST:PORT (required)")
	creds := fs.String("creds", "", "credentials directory from 'wakegate certs issue --out'")
	caURL := fs.String("ca-url", "", "the gateway's CA API, https://HOST:PORT, to enrol with a token and to renew")
	caFP := fs.String("ca-fingerprint", "", "SHA-256 fingerprint of the CA root ('wakegate certs fingerprint'), with --token")
	token := fs.String("token", "", "single-use enrolment token (prefer $WAKEGATE_TOKEN or --token-file: arguments are visible to other users)")
	tokenFile := fs.String("token-file", "", "file holding the single-use enrolment token")
	certTTL := fs.Duration("cert-ttl", 0, "lifetime to ask for when enrolling with a token (default: the CA's, 1h)")
	listen := fs.String("listen", "127.0.0.1:9080", "local address for plain TCP clients")
	serverName := fs.String("server-name", "", "name to verify in the gateway's certificate (default: the --gateway host)")
	wait := fs.Bool("wait", false, "wake the engine, wait until it is ready, then exit")
	waitTimeout := fs.Duration("wait-timeout", 10*time.Minute, "give up waiting for the engine after this long")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args, stdout); err != nil {
		return helpOK(err)
	}
	cmdArgs := fs.Args()
	switch {
	case *gw == "":
		return usageError("connect", "--gateway is required")
	case *creds == "" && *token == "" && *tokenFile == "" && os.Getenv("WAKEGATE_TOKEN") == "":
		return usageError("connect", "--creds, or a token (--token, --token-file or $WAKEGATE_TOKEN) with --ca-url and --ca-fingerprint, is required")
	case *wait && len(cmdArgs) > 0:
		return usageError("connect", "--wait and a command are exclusive: a command already waits")
	case *waitTimeout <= 0:
		return usageError("connect", "--wait-timeout must be positive")
	}
	host, _, err := net.SplitHostPort(*gw)
	if err != nil {
		return usageError("connect", "--gateway %q: %v", *gw, err)
	}
	if *serverName == "" {
		*serverName = host
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	renewer, roots, err := clientIdentity(ctx, *creds, *caURL, *caFP, *token, *tokenFile, *certTTL, log)
	if err != nil {
		return err
	}
	stopRenewing := goBackground(renewer.Run)
	defer stopRenewing()
	sc, err := connect.New(connect.Config{
		Gateway: *gw,
		TLS:     certs.ClientTLS(renewer.Current, roots, *serverName),
		Log:     log,
	})
	if err != nil {
		return err
	}
	waitReady := func() (io.Closer, error) {
		wctx, cancel := context.WithTimeout(ctx, *waitTimeout)
		defer cancel()
		return waitWithProgress(wctx, sc, stderr)
	}
	if *wait {
		hold, err := waitReady()
		if err != nil {
			return err
		}
		return hold.Close()
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("connect: listen on %s: %w", *listen, err)
	}
	served := make(chan error, 1)
	go func() { served <- sc.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		sc.Shutdown(sctx)
		<-served
	}()
	addr := "tcp://" + ln.Addr().String()

	if len(cmdArgs) == 0 {
		log.Info("connect listening", "addr", ln.Addr().String(), "gateway", *gw)
		select {
		case <-ctx.Done():
			return nil
		case err := <-served:
			return err
		}
	}
	hold, err := waitReady()
	if err != nil {
		return err
	}
	defer hold.Close()
	return runChild(ctx, cmdArgs, addr, stdout, stderr)
}

// clientIdentity obtains the client certificate (from a credentials
// directory or by enrolling with a token) and the renewer that keeps it
// fresh. Without a CA URL the renewer never renews: the certificate serves
// until it expires.
func clientIdentity(ctx context.Context, creds, caURL, caFP, token, tokenFile string, certTTL time.Duration, log *slog.Logger) (*certs.Renewer, *x509.CertPool, error) {
	if creds == "" || token != "" || tokenFile != "" {
		var err error
		if token, err = readToken(token, tokenFile); err != nil {
			return nil, nil, err
		}
	}
	if token != "" {
		if caURL == "" || caFP == "" {
			return nil, nil, usageError("connect", "a token needs --ca-url and --ca-fingerprint ('wakegate certs fingerprint' prints it)")
		}
		e, err := certs.Enroll(ctx, caURL, caFP, token, certTTL)
		if err != nil {
			return nil, nil, err
		}
		log.Info("enrolled with the CA", "identity", e.Cert.Leaf.Subject.CommonName, "serial", e.Cert.Leaf.SerialNumber.String(),
			"not_after", e.Cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
		r, err := certs.NewRenewer("client", e.Cert, e.Renew, log)
		return r, e.Roots, err
	}
	cert, roots, err := certs.LoadClientCreds(creds)
	if err != nil {
		return nil, nil, err
	}
	renew := func(context.Context, *tls.Certificate) (*tls.Certificate, error) {
		return nil, errors.New("no --ca-url to renew at: issue new credentials with 'wakegate certs issue'")
	}
	if caURL != "" {
		if renew, err = certs.NewAPIRenewer(caURL, roots); err != nil {
			return nil, nil, err
		}
	}
	r, err := certs.NewRenewer("client", cert, renew, log)
	return r, roots, err
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
	if err != nil {
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
