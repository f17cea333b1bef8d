package exechost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/internal/childenv"
)

// Config configures the exec provider: three command lines, run with
// /bin/sh -c, that start, stop and report an engine machine on any host
// (a cloud CLI, a hypervisor's tool, ssh to a box under a desk).
//
// Every command gets the process environment without its secrets (the CA
// password, tokens, the Fly API token: see childenv.Secrets), Env,
// WAKEGATE_ENGINE=<id> and WAKEGATE_ENGINE_NAME, the engine's certificate
// name (identity.EngineName), which 'wakegate engine' reads as its --identity. Start also gets WAKEGATE_TOKEN, the engine's
// single-use enrolment token; pass it on to the machine (e.g. as its
// environment), never as an argument where ps and audit logs would see it.
// Whatever a command prints reaches an error message — and a waiting
// client's wake failure — only with every secret value blanked.
type Config struct {
	// IDs are the engine ids of the pool (e.g. engine-0 … engine-(N-1)).
	IDs []string
	// Start starts the machine unless it is running, and prints its
	// engine's mTLS address host:port as the last non-empty line of stdout
	// once the engine listens. It must also print the address when the
	// machine was already running: the gateway asks at every wake.
	Start string
	// Stop returns once the machine has stopped.
	Stop string
	// Status is optional; it prints one word: running or stopped (anything
	// else is reported as-is).
	Status string
	// Token returns a fresh single-use enrolment token for each start.
	Token func(id string) (string, error)
	// Env is extra environment (KEY=value) for every command, e.g.
	// WAKEGATE_CA_URL and WAKEGATE_CA_FINGERPRINT.
	Env []string
	Log *slog.Logger
}

// Provider is a provider whose machines are started, stopped and reported
// by the operator's command lines. It keeps no state — the host is the
// source of truth about its machines — so it is safe for concurrent use.
type Provider struct {
	cfg       Config
	waitDelay time.Duration // execWaitDelay; shorter in tests
}

const (
	// execOutputCap bounds what is kept of each of a command's stdout and
	// stderr: a chatty CLI must not grow the gateway's memory. The tail is
	// kept, since that is where the address and the reason for a failure are.
	execOutputCap = 64 << 10
	// execErrTail bounds the stderr quoted in an error message.
	execErrTail = 1 << 10
	// execWaitDelay is how long a command has to exit after SIGTERM once
	// its ctx ends, before it is killed and its pipes closed.
	execWaitDelay = 5 * time.Second
)

// New validates cfg.
func New(cfg Config) (*Provider, error) {
	if len(cfg.IDs) == 0 {
		return nil, errors.New("exec provider: no engine ids")
	}
	seen := map[string]bool{}
	for _, id := range cfg.IDs {
		if id == "" {
			return nil, errors.New("exec provider: empty engine id")
		}
		if seen[id] {
			return nil, fmt.Errorf("exec provider: engine id %q listed twice", id)
		}
		seen[id] = true
	}
	if strings.TrimSpace(cfg.Start) == "" || strings.TrimSpace(cfg.Stop) == "" {
		return nil, errors.New("exec provider: need both a start and a stop command")
	}
	if cfg.Token == nil {
		return nil, errors.New("exec provider: no token source")
	}
	for _, kv := range cfg.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("exec provider: environment entry %q is not KEY=value", kv)
		}
		if k == "WAKEGATE_ENGINE" || k == "WAKEGATE_ENGINE_NAME" || k == "WAKEGATE_TOKEN" {
			return nil, fmt.Errorf("exec provider: %s is set by the provider, not in the environment list", k)
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cfg.IDs = slices.Clone(cfg.IDs)
	cfg.Env = slices.Clone(cfg.Env)
	return &Provider{cfg: cfg, waitDelay: execWaitDelay}, nil
}

// Engines lists the engine ids.
func (x *Provider) Engines(context.Context) ([]string, error) {
	return slices.Clone(x.cfg.IDs), nil
}

// Start runs the start command with a fresh token and returns the address
// it printed as "tls://host:port". That is not readiness: the gateway asks
// the engine's status for that.
func (x *Provider) Start(ctx context.Context, id string) (string, error) {
	if err := x.known(id); err != nil {
		return "", err
	}
	tok, err := x.cfg.Token(id)
	if err != nil {
		return "", fmt.Errorf("exec provider: start %s: token: %w", id, err)
	}
	if tok == "" {
		return "", fmt.Errorf("exec provider: start %s: token source returned an empty token", id)
	}
	out, err := x.run(ctx, "start", x.cfg.Start, id, tok)
	if err != nil {
		return "", err
	}
	addr, err := lastLine(out)
	if err == nil {
		err = checkHostPort(addr)
	}
	if err != nil {
		return "", fmt.Errorf("exec provider: start %s: %s", id, childenv.NewScrubber(x.cfg.Env, tok).Scrub(err.Error()))
	}
	return "tls://" + addr, nil
}

// Stop runs the stop command, which returns once the machine has stopped.
func (x *Provider) Stop(ctx context.Context, id string) error {
	if err := x.known(id); err != nil {
		return err
	}
	_, err := x.run(ctx, "stop", x.cfg.Stop, id, "")
	return err
}

// Status runs the status command and returns the word it printed,
// normally "running" or "stopped".
func (x *Provider) Status(ctx context.Context, id string) (string, error) {
	if err := x.known(id); err != nil {
		return "", err
	}
	if strings.TrimSpace(x.cfg.Status) == "" {
		return "", fmt.Errorf("exec provider: status %s: no status command configured", id)
	}
	out, err := x.run(ctx, "status", x.cfg.Status, id, "")
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(out))
	if s == "" {
		return "", fmt.Errorf("exec provider: status %s: status command printed nothing; it must print running or stopped", id)
	}
	return s, nil
}

func (x *Provider) known(id string) error {
	if !slices.Contains(x.cfg.IDs, id) {
		return fmt.Errorf("exec provider: no engine %q (engines are %s)", id, strings.Join(x.cfg.IDs, ", "))
	}
	return nil
}

// run runs one command line for engine id and returns its (capped) stdout.
// tok, if set, is passed as WAKEGATE_TOKEN. It and every other secret are
// scrubbed from anything the command printed before it reaches an error
// message.
func (x *Provider) run(ctx context.Context, kind, line, id, tok string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", line)
	cmd.Env = x.env(id, tok)
	var stdout, stderr tailBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Its own process group, so that the end of ctx reaches what the shell
	// started (a CLI, its helpers), not only the shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	// If the group ignores SIGTERM, os/exec kills the shell and closes the
	// pipes after this, so Wait returns even if a grandchild holds them.
	cmd.WaitDelay = x.waitDelay

	t0 := time.Now()
	err := cmd.Start()
	if err == nil {
		// When the command began, apart from its run: what a measurement
		// of a wake needs to tell the gateway's share (token, spawn) from
		// the command's own start-up.
		x.cfg.Log.Debug("exec provider command started", "engine", id, "kind", kind, "pid", cmd.Process.Pid,
			"spawn_us", time.Since(t0).Microseconds())
		err = cmd.Wait()
	}
	if err != nil && ctx.Err() != nil && cmd.Process != nil {
		// Sweep anything of the group that outlived SIGTERM (os/exec killed
		// only the shell). The kernel does not reuse a process group id while
		// a member lives; if none is left this finds no one, unless another
		// process took the id and led a group of its own in the moment since
		// Wait, which is accepted.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	log := x.cfg.Log.With("engine", id, "kind", kind, "duration_ms", time.Since(t0).Milliseconds(), "exit_code", code)
	if err == nil {
		log.Info("exec provider command")
		return stdout.Bytes(), nil
	}
	log.Warn("exec provider command failed", "err", err)

	var tail string
	if t := errTail(childenv.NewScrubber(x.cfg.Env, tok).Scrub(string(stderr.Bytes())), execErrTail); t != "" {
		tail = ": " + t
	}
	var exitErr *exec.ExitError
	switch {
	case cmd.Process == nil:
		return nil, fmt.Errorf("exec provider: %s %s: not started: %w", kind, id, err)
	case ctx.Err() != nil:
		// Wrap the ctx error for callers that branch on it.
		return nil, fmt.Errorf("exec provider: %s %s: %w: command stopped (%v)%s", kind, id, ctx.Err(), err, tail)
	case errors.As(err, &exitErr) && exitErr.ExitCode() == 127:
		return nil, fmt.Errorf("exec provider: %s %s: %v (command not found: check the %s command line and PATH)%s", kind, id, err, kind, tail)
	case errors.As(err, &exitErr) && exitErr.ExitCode() == 126:
		return nil, fmt.Errorf("exec provider: %s %s: %v (not executable: check the %s command's permissions)%s", kind, id, err, kind, tail)
	}
	return nil, fmt.Errorf("exec provider: %s %s: %v%s", kind, id, err, tail)
}

// env is the process environment without its secrets, the configured
// extra environment and the provider's own variables, later entries
// winning. Only Start sees a token, and only its own.
func (x *Provider) env(id, tok string) []string {
	extra := append(slices.Clone(x.cfg.Env), "WAKEGATE_ENGINE="+id, "WAKEGATE_ENGINE_NAME="+identity.EngineName(id))
	if tok != "" {
		extra = append(extra, "WAKEGATE_TOKEN="+tok)
	}
	return childenv.Env(extra...)
}
