package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// 'connect --background' runs as two processes. The parent starts a copy of
// itself (the child, marked by envBackgroundChild) in a new session with
// its output in the log file and a pipe on fd 3; the child enrols, wakes
// the engine and waits until it is ready, then reports its address on the
// pipe and serves. The parent relays the child's progress, writes the pid
// file and $GITHUB_ENV, prints the address and exits: the CI step ends
// while the sidecar serves the next ones. One process does the enrolment,
// so one OIDC token (or single-use token) is spent per job.
//
// Pipe records, one per line: "say TEXT" (progress to show), "ready ADDR",
// "fail MESSAGE".
const (
	envBackgroundChild = "WAKEGATE_CONNECT_BACKGROUND_CHILD"
	backgroundFD       = 3
)

func isBackgroundChild() bool { return os.Getenv(envBackgroundChild) == "1" }

// startBackground is the parent's side.
func startBackground(ctx context.Context, args []string, f *connectFlags, stdout, stderr io.Writer) error {
	self, err := wakegateBin()
	if err != nil {
		return err
	}
	logPath := f.mode.logFile
	if logPath == "" {
		logPath = f.mode.pidFile + ".log"
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("connect: open the sidecar's log: %w", err)
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd := exec.Command(self, append([]string{"connect"}, args...)...)
	cmd.Env = append(os.Environ(), envBackgroundChild+"=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw} // fd 3
	// Its own session: the signals of the step's process group (a CI step
	// ending, ^C in a terminal) do not reach the sidecar.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		return fmt.Errorf("connect: start the sidecar: %w", err)
	}

	records := make(chan string)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(records)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			records <- sc.Text()
		}
	}()
	// The reader ends at EOF: when the child closes the pipe, exits, or
	// is killed; pr.Close (deferred) unblocks it otherwise.
	defer func() {
		pr.Close()
		for range records {
		}
		<-readerDone
	}()

	var failure string
	for {
		select {
		case <-ctx.Done():
			stopChild(cmd)
			return ctx.Err()
		case rec, ok := <-records:
			if !ok {
				return childFailed(cmd, failure, logPath)
			}
			kind, rest, _ := strings.Cut(rec, " ")
			switch kind {
			case "say":
				fmt.Fprintln(stderr, rest)
			case "fail":
				failure = rest
			case "ready":
				return backgroundReady(cmd, f.mode.pidFile, logPath, rest, stdout, stderr)
			}
		}
	}
}

// backgroundReady finishes the parent once the child serves at addr.
func backgroundReady(cmd *exec.Cmd, pidFile, logPath, addr string, stdout, stderr io.Writer) error {
	pid := cmd.Process.Pid
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		stopChild(cmd)
		return fmt.Errorf("connect: write --pid-file: %w (the sidecar was stopped)", err)
	}
	if path := os.Getenv("GITHUB_ENV"); path != "" {
		if err := appendEnv(path, "BUILDKIT_HOST="+addr, "_EXPERIMENTAL_DAGGER_RUNNER_HOST="+addr); err != nil {
			stopChild(cmd)
			os.Remove(pidFile)
			return fmt.Errorf("connect: append to $GITHUB_ENV: %w (the sidecar was stopped)", err)
		}
		fmt.Fprintf(stderr, "wakegate: BUILDKIT_HOST and _EXPERIMENTAL_DAGGER_RUNNER_HOST set to %s for the next steps\n", addr)
	}
	fmt.Fprintf(stderr, "wakegate: sidecar (pid %d) serving %s; log %s; stop it with: kill $(cat %s)\n", pid, addr, logPath, pidFile)
	fmt.Fprintln(stdout, addr)
	// The parent exits; nothing of its waits for the child.
	return cmd.Process.Release()
}

// childFailed waits (briefly) for a child that closed its pipe without
// becoming ready and says why.
func childFailed(cmd *exec.Cmd, failure, logPath string) error {
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var status error
	select {
	case status = <-exited:
	case <-time.After(10 * time.Second):
		stopChild(cmd)
		status = <-exited
	}
	if failure == "" {
		failure = fmt.Sprintf("the sidecar exited before it was ready (%v)", status)
	}
	return fmt.Errorf("%s (sidecar log: %s)", failure, logPath)
}

// stopChild asks the child to stop, then kills it after a grace period,
// and reaps it.
func stopChild(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(shutdownGrace):
		cmd.Process.Kill()
		<-exited
	}
}

// appendEnv appends NAME=VALUE lines to a GitHub Actions environment file.
func appendEnv(path string, lines ...string) error {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(fh, strings.Join(lines, "\n"))
	return errors.Join(err, fh.Close())
}

// readyReporter is the child's side of the pipe; outside a background child
// every method does nothing.
type readyReporter struct {
	mu      sync.Mutex // guards w
	w       *os.File   // nil once closed, or outside a child
	pidFile string
}

func newReadyReporter(f *connectFlags) (*readyReporter, error) {
	if !f.mode.background || !isBackgroundChild() {
		return &readyReporter{}, nil
	}
	w := os.NewFile(backgroundFD, "wakegate-ready")
	if w == nil {
		return nil, errors.New("connect: background child without its report pipe")
	}
	return &readyReporter{w: w, pidFile: f.mode.pidFile}, nil
}

func (r *readyReporter) send(kind, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w == nil {
		return
	}
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(r.w, "%s %s\n", kind, line)
	}
}

// progress is w, with each line also sent to the parent while it listens.
func (r *readyReporter) progress(w io.Writer) io.Writer {
	if r.w == nil {
		return w
	}
	return io.MultiWriter(w, writerFunc(func(p []byte) (int, error) {
		r.send("say", string(p))
		return len(p), nil
	}))
}

// ready tells the parent the sidecar serves at addr, and stops reporting.
func (r *readyReporter) ready(addr string) {
	r.send("ready", addr)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w != nil {
		r.w.Close()
		r.w = nil
	}
}

// fail tells the parent why the sidecar gives up.
func (r *readyReporter) fail(err error) { r.send("fail", err.Error()) }

// close ends reporting; a child that served removes its pid file when it
// still names it.
func (r *readyReporter) close() {
	r.mu.Lock()
	if r.w != nil {
		r.w.Close()
		r.w = nil
	}
	r.mu.Unlock()
	if r.pidFile != "" {
		if b, err := os.ReadFile(r.pidFile); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
			os.Remove(r.pidFile)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
