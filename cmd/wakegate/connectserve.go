package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/connect"
	"github.com/wakegate/wakegate/internal/memtrim"
	"github.com/wakegate/wakegate/wire"
)

// childStopGrace is how long CMD gets to exit after SIGTERM when connect is
// interrupted, before it is killed.
const childStopGrace = 10 * time.Second

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

// serveConnectMode opens the listener (every flag was judged before), then
// enrols, then waits for the engine, serves, or runs CMD.
func serveConnectMode(ctx context.Context, f *connectFlags, cmdArgs []string, rep *readyReporter, stdout, stderr io.Writer) error {
	log, err := newFormatLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	// The listener opens before enrolment: a port in use or a path taken
	// fails without spending the job's token. Clients that connect before
	// Serve wait in the backlog.
	var ln net.Listener
	if !f.mode.wait {
		if ln, err = connect.Listen(f.local.addr); err != nil {
			return err
		}
		defer ln.Close() // when Serve never ran; closing twice is harmless
		if !f.local.addr.LocalOnly() {
			log.Warn("--unsafe-listen: other machines can reach the sidecar, and whoever connects builds as this job", "addr", ln.Addr().String())
		}
	}
	wctx, cancelWait := context.WithTimeout(ctx, f.mode.waitTimeout)
	defer cancelWait()
	sc, stopRenewing, err := newSidecar(wctx, f, stderr, log)
	if err != nil {
		return err
	}
	defer stopRenewing()
	waitReady := func() (io.Closer, error) { return waitWithProgress(wctx, sc, stderr) }
	if f.mode.wait {
		hold, err := waitReady()
		if err != nil {
			return err
		}
		return hold.Close()
	}

	defer memtrim.Start(ctx, memtrim.Config{Log: log})() // returns memory after bursts of new connections

	served := make(chan error, 1)  // Serve's result, read at most once
	serving := make(chan struct{}) // closed when Serve has returned
	go func() {
		defer close(serving)
		served <- sc.Serve(ln)
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := sc.Shutdown(sctx); err != nil {
			log.Warn("connect shutdown", "err", err)
		}
		<-serving
	}()
	addr := connect.ClientAddress(ln)
	serve := func() error {
		log.Info("connect listening", "addr", ln.Addr().String(), "gateway", strings.Join(f.gateway.addrs, ","))
		select {
		case <-ctx.Done():
			log.Info("connect stopping", "addr", ln.Addr().String())
			return nil
		case err := <-served:
			return err
		}
	}
	if len(cmdArgs) == 0 && !f.mode.background {
		return serve()
	}
	hold, err := waitReady()
	if err != nil {
		return err
	}
	defer hold.Close()
	if f.mode.background {
		// The wake connection stays open while the sidecar serves: the
		// engine stays awake between the job's steps.
		rep.ready(addr)
		return serve()
	}
	return runChild(ctx, cmdArgs, addr, stdout, stderr)
}

// newSidecar obtains the client's certificate (enrolling if the flags say
// so), keeps it renewed until stop, and returns the sidecar that presents
// it to the gateway.
func newSidecar(ctx context.Context, f *connectFlags, progress io.Writer, log *slog.Logger) (sc *connect.Sidecar, stop func(), err error) {
	renewer, roots, err := clientIdentity(ctx, &f.cred, progress, log)
	if err != nil {
		return nil, nil, err
	}
	// An empty server name: the sidecar verifies each address's host.
	sc, err = connect.New(connect.Config{
		Gateways: f.gateway.addrs,
		TLS:      certs.ClientTLS(renewer.Current, roots, f.gateway.serverName),
		Ahead:    f.gateway.ahead,
		Log:      log,
	})
	if err != nil {
		return nil, nil, err
	}
	return sc, goBackground(renewer.Run), nil
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
