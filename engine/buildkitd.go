package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wakegate/wakegate/internal/childenv"
)

// maxSocketPath is the longest unix socket path Linux accepts (sun_path less
// its terminating NUL).
const maxSocketPath = 107

// Buildkitd describes one engine process — buildkitd, Dagger's engine
// (Kind), or another engine through Cmd — and its state directory.
type Buildkitd struct {
	// Kind is the engine: buildkit (the default) or dagger.
	Kind Kind
	// Bin is the buildkitd executable.
	Bin string
	// Cmd, if set, replaces buildkitd: a command line in which {socket},
	// {root} and {config} stand for the socket path, the cache root and
	// the generated buildkitd.toml.
	Cmd []string
	// EngineBin is the directory of Dagger's binaries (DaggerFiles).
	EngineBin string
	// Net is a Dagger engine's network: its own namespace (the default) or
	// the machine's.
	Net Net
	// Self is the wakegate binary whose NSInitCommand runs a Dagger
	// engine's namespaces; "" is this executable.
	Self string
	// StopTimeout bounds a Dagger engine's stop inside its namespace init,
	// should 'wakegate engine' itself die (it is sent SIGTERM then).
	StopTimeout time.Duration
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
	if b.Kind == KindDagger {
		return b.Self, b.nsConfig().args()
	}
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

func (b *Buildkitd) nsConfig() nsConfig {
	stop := b.StopTimeout
	if stop <= 0 {
		stop = time.Minute
	}
	return nsConfig{Bin: b.EngineBin, Root: b.Root(), Socket: b.Socket(), Config: b.Config,
		Scratch: b.scratch(), Metrics: b.MetricsSocket(), Net: b.Net, StopTimeout: stop}
}

// Socket is where the engine listens: a path both the engine's namespace
// and 'wakegate engine' see.
func (b *Buildkitd) Socket() string {
	if b.Kind == KindDagger {
		return filepath.Join(b.Dir, "engine.sock")
	}
	return filepath.Join(b.Dir, "buildkitd.sock")
}

// Addr is the socket as a BuildKit address.
func (b *Buildkitd) Addr() string { return "unix://" + b.Socket() }

// MetricsSocket is where a Dagger engine's namespace init serves Dagger's
// metrics (connected clients, cache size).
func (b *Buildkitd) MetricsSocket() string { return filepath.Join(b.Dir, "metrics.sock") }

// scratch is the mount point of the tmpfs holding a Dagger namespace's
// overlay layers; on the host it stays an empty directory.
func (b *Buildkitd) scratch() string { return filepath.Join(b.Dir, "ns") }

// LogPath is where the engine process's output goes.
func (b *Buildkitd) LogPath() string {
	if b.Kind == KindDagger {
		return filepath.Join(b.Dir, "dagger.log")
	}
	return filepath.Join(b.Dir, "buildkitd.log")
}

// sockets are the unix socket paths the engine uses, each to be checked
// against maxSocketPath.
func (b *Buildkitd) sockets() []string {
	if b.Kind == KindDagger {
		return []string{b.Socket(), b.MetricsSocket()}
	}
	return []string{b.Socket()}
}

// Process is a running engine process.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, set before exited is closed
}

// Start launches the engine process. Its output goes to LogPath.
func (b *Buildkitd) Start() (*Process, error) {
	for _, sock := range b.sockets() {
		if len(sock) > maxSocketPath {
			return nil, fmt.Errorf("start engine: socket path %s is longer than %d bytes; use a shorter state directory", sock, maxSocketPath)
		}
	}
	if err := os.MkdirAll(b.Root(), 0o700); err != nil {
		return nil, fmt.Errorf("start engine: %w", err)
	}
	// A socket left by a killed process would make the engine fail to bind.
	for _, sock := range b.sockets() {
		if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("start engine: remove stale socket: %w", err)
		}
	}
	// It ends with this process, even a killed one (SIGTERM: BuildKit closes
	// its cache databases): left running, it would hold the state
	// directory against the next engine, and nobody would stop it.
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if b.Kind == KindDagger {
		if err := b.prepareDagger(); err != nil {
			return nil, err
		}
		// Its own mount and PID namespaces (and network, unless host): when
		// the namespace init exits the kernel kills all that is left in it,
		// Dagger's dnsmasq included, and its mounts go with it. It must not
		// outlive this process either (a killed 'wakegate engine' would leave
		// an engine holding the cache): SIGTERM, which it forwards once.
		attr.Cloneflags = syscall.CLONE_NEWNS | syscall.CLONE_NEWPID
		if b.Net != NetHost {
			attr.Cloneflags |= syscall.CLONE_NEWNET
		}
	}
	bin, args := b.command()
	p, err := startProcess(bin, args, nil, b.LogPath(), attr)
	if err != nil {
		if b.Kind == KindDagger {
			return nil, fmt.Errorf("start dagger engine through %s %s: %w", bin, NSInitCommand, err)
		}
		return nil, fmt.Errorf("start engine %s: %w (for buildkitd, build it with 'make tools')", bin, err)
	}
	return p, nil
}

// prepareDagger fills in what a Dagger engine's command needs.
func (b *Buildkitd) prepareDagger() error {
	if err := CheckDaggerBin(b.EngineBin); err != nil {
		return fmt.Errorf("start dagger engine: %w", err)
	}
	if b.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("start dagger engine: find the wakegate binary: %w", err)
		}
		b.Self = self
	}
	if err := os.MkdirAll(b.scratch(), 0o700); err != nil {
		return fmt.Errorf("start dagger engine: %w", err)
	}
	// A previous engine on this state may still be stopping: its namespace
	// init outlives a killed 'wakegate engine' to stop Dagger cleanly. Dagger
	// refuses to start while another holds its lock; wait for it instead.
	stop := b.StopTimeout
	if stop <= 0 {
		stop = time.Minute
	}
	return waitUnlocked(filepath.Join(b.Root(), "dagger-engine.lock"), stop+killMargin)
}

// waitUnlocked waits up to timeout until nobody holds an flock on path (or
// it does not exist).
func waitUnlocked(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("start dagger engine: %w", err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start dagger engine: %s is still locked after %s: another Dagger engine runs on this state", path, timeout)
		}
		time.Sleep(100 * time.Millisecond) // polling the lock, bounded by the deadline
	}
}

// startProcess starts bin with args (in its own process group unless attr
// says otherwise), appending its output to logPath. Its environment is this
// process's without the secrets (childenv.Env), plus env.
func startProcess(bin string, args, env []string, logPath string, attr *syscall.SysProcAttr) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own copy
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = childenv.Env(env...)
	// Its own process group: a Ctrl-C at the terminal reaches wakegate,
	// which stops engines in order, not the engine directly.
	if attr == nil {
		attr = &syscall.SysProcAttr{Setpgid: true}
	}
	cmd.SysProcAttr = attr
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	if attr.Pdeathsig == 0 {
		if err := cmd.Start(); err != nil {
			return nil, err
		}
	} else if err := startFromLockedThread(cmd, p.exited); err != nil {
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// startFromLockedThread starts cmd from an OS thread that lives until
// exited closes. The kernel sends a child its parent-death signal when the
// *thread* that forked it ends, and Go may end threads: the signal must
// mean that this process died, not that the scheduler retired a thread.
func startFromLockedThread(cmd *exec.Cmd, exited <-chan struct{}) error {
	started := make(chan error, 1)
	go func() {
		// Never unlocked: once the child has exited, this goroutine's end
		// takes the thread with it, which is then harmless.
		runtime.LockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			<-exited
		}
	}()
	return <-started
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
		return fmt.Errorf("stop engine process: %w", err)
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
		return fmt.Errorf("stop engine process pid %d: still running after SIGKILL", p.Pid())
	}
	return fmt.Errorf("stop engine process pid %d: killed, did not exit after SIGTERM: %w", p.Pid(), ctx.Err())
}
