package flytest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fly "github.com/superfly/fly-go"

	"github.com/wakegate/wakegate/enginecmd"
)

// EngineRunner runs each started machine as a local process: Bin with the
// machine's init command (as 'wakegate fly init' built it with enginecmd;
// the runner builds none of its own), its environment, its volume's mount
// path mapped to the volume's directory, and its --listen address moved to
// the machine's own private loopback address. It is how the emulator's
// machines become real 'wakegate engine' processes.
type EngineRunner struct {
	Bin string
	Log *slog.Logger

	mu    sync.Mutex // guards procs
	procs map[string]*proc
}

type proc struct {
	cmd    *exec.Cmd
	done   chan struct{}
	frozen atomic.Bool // stopped by Freeze, not yet thawed
}

// Start launches the machine's process; like Fly's "started", that means
// booted, not ready. The channel it returns is closed when the process
// ends.
func (r *EngineRunner) Start(m *fly.Machine, volumeDir string) (<-chan struct{}, error) {
	if m.Config == nil {
		return nil, errors.New("machine has no config")
	}
	args := append([]string(nil), m.Config.Init.Cmd...)
	if len(m.Config.Init.Exec) > 0 {
		args = append([]string(nil), m.Config.Init.Exec[1:]...)
	}
	for i, a := range args {
		for _, mt := range m.Config.Mounts {
			if a == mt.Path && volumeDir != "" {
				args[i] = volumeDir
			}
		}
		if a == enginecmd.ListenFlag && i+1 < len(args) {
			_, port, err := net.SplitHostPort(args[i+1])
			if err != nil {
				return nil, fmt.Errorf("machine %s: --listen %q: %w", m.ID, args[i+1], err)
			}
			args[i+1] = net.JoinHostPort(m.PrivateIP, port)
		}
	}
	logPath := filepath.Join(filepath.Dir(volumeDir), m.ID+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(r.Bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = os.Environ()
	for k, v := range m.Config.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("machine %s: %w", m.ID, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	r.mu.Lock()
	if r.procs == nil {
		r.procs = map[string]*proc{}
	}
	r.procs[m.ID] = p
	r.mu.Unlock()
	if r.Log != nil {
		r.Log.Info("emulated machine running", "machine", m.ID, "addr", m.PrivateIP, "pid", cmd.Process.Pid, "log", logPath)
	}
	return p.done, nil
}

// Freeze stops the machine's processes where they are (SIGSTOP to the
// process group), as a suspended machine's VM is paused: connections stay
// open and nothing runs.
func (r *EngineRunner) Freeze(m *fly.Machine) error { return r.signalGroup(m, syscall.SIGSTOP, true) }

// Thaw lets a frozen machine's processes run on (SIGCONT): the same
// processes, with the environment they were started with.
func (r *EngineRunner) Thaw(m *fly.Machine) error { return r.signalGroup(m, syscall.SIGCONT, false) }

func (r *EngineRunner) signalGroup(m *fly.Machine, sig syscall.Signal, frozen bool) error {
	r.mu.Lock()
	p, ok := r.procs[m.ID]
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("machine %s has no process", m.ID)
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("machine %s: %s: %w", m.ID, sig, err)
	}
	p.frozen.Store(frozen)
	return nil
}

// Stop sends SIGTERM and waits up to the machine's kill timeout (Fly's
// stop_config, 300 s at most), then kills it, as Fly does. A frozen
// process (a snapshot being discarded) is killed at once.
func (r *EngineRunner) Stop(m *fly.Machine) error {
	r.mu.Lock()
	p, ok := r.procs[m.ID]
	delete(r.procs, m.ID)
	r.mu.Unlock()
	if !ok {
		return nil
	}
	if p.frozen.Load() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return nil
	}
	grace := 300 * time.Second
	if m.Config != nil && m.Config.StopConfig != nil && m.Config.StopConfig.Timeout != nil {
		grace = m.Config.StopConfig.Timeout.Duration
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("machine %s: killed after its %s kill timeout", m.ID, grace)
}
