package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path less
// its terminating NUL).
const maxSocketPath = 107

// Buildkitd describes one engine process — buildkitd, or another engine
// such as Dagger's through Cmd — and its state directory.
type Buildkitd struct {
	// Bin is the buildkitd executable.
	Bin string
	// Cmd, if set, replaces buildkitd: a command line in which {socket},
	// {root} and {config} stand for the socket path, the cache root and
	// the generated buildkitd.toml.
	Cmd []string
	// Dir is the engine's persistent state: BuildKit's root (the cache),
	// its socket and its log.
	Dir string
	// Snapshotter is BuildKit's OCI worker snapshotter ("native" works on
	// any filesystem).
	Snapshotter string
	// Config is a buildkitd.toml to pass with --config ("" passes none).
	Config string
	Log    *slog.Logger
}

// Root is the engine's cache root inside Dir.
func (b *Buildkitd) Root() string { return filepath.Join(b.Dir, "root") }

// command is the engine's command line.
func (b *Buildkitd) command() (string, []string) {
	if len(b.Cmd) > 0 {
		r := strings.NewReplacer("{socket}", b.Socket(), "{root}", b.Root(), "{config}", b.Config)
		args := make([]string, len(b.Cmd)-1)
		for i, a := range b.Cmd[1:] {
			args[i] = r.Replace(a)
		}
		return b.Cmd[0], args
	}
	snap := b.Snapshotter
	if snap == "" {
		snap = "native"
	}
	args := []string{"--root", b.Root(), "--addr", b.Addr(), "--oci-worker-snapshotter", snap, "--containerd-worker=false"}
	if b.Config != "" {
		args = append(args, "--config", b.Config)
	}
	return b.Bin, args
}

// Socket is where buildkitd listens.
func (b *Buildkitd) Socket() string { return filepath.Join(b.Dir, "buildkitd.sock") }

// Addr is the socket as a BuildKit address.
func (b *Buildkitd) Addr() string { return "unix://" + b.Socket() }

// Process is a running buildkitd.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, set before exited is closed
}

// Start launches buildkitd. Its output goes to buildkitd.log in Dir.
func (b *Buildkitd) Start() (*Process, error) {
	if len(b.Socket()) > maxSocketPath {
		return nil, fmt.Errorf("start buildkitd: socket path %s is longer than %d bytes; use a shorter state directory", b.Socket(), maxSocketPath)
	}
	if err := os.MkdirAll(b.Root(), 0o700); err != nil {
		return nil, fmt.Errorf("start buildkitd: %w", err)
	}
	// A socket left by a killed process would make buildkitd fail to bind.
	if err := os.Remove(b.Socket()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("start buildkitd: remove stale socket: %w", err)
	}
	bin, args := b.command()
	p, err := startProcess(bin, args, nil, filepath.Join(b.Dir, "buildkitd.log"))
	if err != nil {
		return nil, fmt.Errorf("start engine %s: %w (for buildkitd, build it with 'make tools')", bin, err)
	}
	return p, nil
}

// startProcess starts bin with args in its own process group, appending its
// output to logPath. Its environment is this process's without the secrets
// (childEnv), plus env.
func startProcess(bin string, args, env []string, logPath string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own copy
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = childEnv(env...)
	// Its own process group: a Ctrl-C at the terminal reaches wakegate,
	// which stops engines in order, not the engine directly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM, so buildkitd closes its cache databases cleanly, and
// waits for it to exit. If ctx ends first it is killed: a stuck engine must
// not keep its machine billing.
func (p *Process) Stop(ctx context.Context) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop buildkitd: %w", err)
	}
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
	}
	// Kill the whole process group: the build steps buildkitd runs too.
	syscall.Kill(-p.Pid(), syscall.SIGKILL)
	// SIGKILL cannot be ignored; the wait is short but still bounded.
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("stop buildkitd pid %d: still running after SIGKILL", p.Pid())
	}
	return fmt.Errorf("stop buildkitd pid %d: killed, did not exit after SIGTERM: %w", p.Pid(), ctx.Err())
}
