package main

import (
	"context"
	"crypto/tls"
	"errors"
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

func runConnect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("connect", "connect --gateway HOST:PORT --creds DIR [--listen ADDR] [--wait | -- CMD [ARGS...]]", `
Runs the sidecar: plain TCP on --listen (for buildctl, buildx or Dagger),
carried over mTLS to the gateway with the credentials in DIR (client.crt,
client.key, ca.crt from 'wakegate certs issue').

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
	creds := fs.String("creds", "", "credentials directory from 'wakegate certs issue --out' (required)")
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
	case *creds == "":
		return usageError("connect", "--creds is required")
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
	cert, roots, err := certs.LoadClientCreds(*creds)
	if err != nil {
		return err
	}
	sc, err := connect.New(connect.Config{
		Gateway: *gw,
		TLS:     certs.ClientTLS(func() *tls.Certificate { return cert }, roots, *serverName),
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
