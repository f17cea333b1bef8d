package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wakegate/wakegate/enginecmd"
	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/internal/childenv"
)

// LocalConfig configures the local provider.
type LocalConfig struct {
	// Dir holds one state directory per engine (its cache volume).
	Dir string
	// N is the number of engines, named engine-0 … engine-(N-1).
	N int
	// Wakegate is the wakegate binary that runs each engine
	// ('wakegate engine'), so local and remote engines share one code path.
	Wakegate string
	// Buildkitd is passed to each engine.
	Buildkitd string
	// Engine is the kind of engine each runs: buildkit (the default) or
	// dagger, from EngineBin. A local Dagger engine runs in its own mount,
	// PID and network namespaces, so several share this host and none
	// changes it.
	Engine    Kind
	EngineBin string
	// Command is what every engine's 'wakegate engine' shares: the CA URL
	// and fingerprint, drain, stop and kill bounds, certificate lifetime.
	// Local fills in the rest for each engine: its state directory,
	// loopback address, name and engine kind.
	Command enginecmd.Command
	// Token returns a single-use token with which engine id enrols for its
	// server certificate; it travels in the child's environment, never its
	// arguments.
	Token func(id string) (string, error)
	Log   *slog.Logger
}

// Local is the embedded default provider: each engine of the pool is a
// 'wakegate engine' process on this machine, serving mTLS on a loopback
// port and, for this gateway, its unix front (FrontSocket) in its own state
// directory under Dir, which persists across stops like a cache volume.
// The gateway reaches it on the unix front: the engine is this gateway's
// child, running as its user, so TLS between them would protect nothing.
type Local struct {
	cfg   LocalConfig
	ids   []string
	mu    sync.Mutex          // guards procs
	procs map[string]*running // running engines by id
}

type running struct {
	p    *Process
	addr string
	logs []logMark // this run's part of its logs
	tok  string    // blanked from what its logs say
}

// failure describes an engine process that exited: its status and its last
// words.
func (r *running) failure(id string) error {
	words := lastWords(childenv.NewScrubber(nil, r.tok), r.logs...)
	if words == "" {
		return fmt.Errorf("engine %s exited: %v (nothing in its logs)", id, r.p.err)
	}
	return fmt.Errorf("engine %s exited: %v: %s", id, r.p.err, words)
}

// NewLocal validates cfg.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if cfg.N < 1 {
		return nil, fmt.Errorf("local provider: need at least one engine, got %d", cfg.N)
	}
	if cfg.Wakegate == "" || cfg.Token == nil {
		return nil, errors.New("local provider: no wakegate binary or token source")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Engine == "" {
		cfg.Engine = KindBuildkit
	}
	if cfg.Engine == KindDagger {
		if err := CheckDaggerBin(cfg.EngineBin); err != nil {
			return nil, fmt.Errorf("local provider: %w", err)
		}
	}
	l := &Local{cfg: cfg, procs: map[string]*running{}}
	for i := range cfg.N {
		l.ids = append(l.ids, fmt.Sprintf("engine-%d", i))
	}
	for _, id := range l.ids {
		b := l.backend(id)
		for _, sock := range append(b.sockets(), FrontSocket(b.Dir)) {
			if len(sock) > maxSocketPath {
				return nil, fmt.Errorf("local provider: socket path %s is longer than %d bytes; use a shorter --state", sock, maxSocketPath)
			}
		}
	}
	return l, nil
}

func (l *Local) backend(id string) *Buildkitd {
	return &Buildkitd{Kind: l.cfg.Engine, Bin: l.cfg.Buildkitd, EngineBin: l.cfg.EngineBin, Dir: filepath.Join(l.cfg.Dir, id)}
}

// Engines lists the engine ids.
func (l *Local) Engines(context.Context) ([]string, error) { return l.ids, nil }

// Start launches 'wakegate engine' for id unless it is running, and returns
// the engine's unix front ("unix://DIR/engine-N/front.sock") once it
// listens. That is not readiness: the gateway asks the engine's status for
// that.
func (l *Local) Start(ctx context.Context, id string) (string, error) {
	if !l.known(id) {
		return "", fmt.Errorf("local provider: no engine %q", id)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.procs[id]; ok {
		select {
		case <-r.p.Exited():
			l.cfg.Log.Warn("engine process had exited", "engine", id, "pid", r.p.Pid(), "err", r.p.err)
		default:
			return r.addr, nil
		}
	}
	dir := filepath.Join(l.cfg.Dir, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("engine %s: %w", id, err)
	}
	addrFile := filepath.Join(dir, "engine.addr")
	os.Remove(addrFile)
	tok, err := l.cfg.Token(id)
	if err != nil {
		return "", fmt.Errorf("engine %s: token: %w", id, err)
	}
	args := l.command(id, dir, addrFile).Args()
	// The engine process's log first: its last lines say why an engine
	// died at start.
	logs := []logMark{markLog(l.backend(id).LogPath()), markLog(filepath.Join(dir, "engine.log"))}
	// It ends with this gateway, even a killed one (SIGTERM: it drains and
	// stops its engine cleanly): an engine left running would hold its
	// state directory against the next gateway's, and nobody would stop it.
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	p, err := startProcess(l.cfg.Wakegate, args, []string{"WAKEGATE_TOKEN=" + tok}, filepath.Join(dir, "engine.log"), attr)
	if err != nil {
		return "", fmt.Errorf("engine %s: start %s: %w", id, l.cfg.Wakegate, err)
	}
	l.cfg.Log.Info("engine process started", "engine", id, "pid", p.Pid(), "state", dir)
	r := &running{p: p, logs: logs, tok: tok}
	addr, err := waitAddr(ctx, addrFile, p)
	if err != nil {
		p.Stop(context.Background())
		if errors.Is(err, errExitedEarly) {
			return "", fmt.Errorf("%w (before listening; logs in %s)", r.failure(id), dir)
		}
		return "", fmt.Errorf("engine %s: %w (see %s)", id, err, filepath.Join(dir, "engine.log"))
	}
	// The engine opens its unix front before it writes its mTLS address:
	// both listen now.
	l.cfg.Log.Debug("engine listening", "engine", id, "addr", addr)
	r.addr = UnixScheme + FrontSocket(dir)
	l.procs[id] = r
	return r.addr, nil
}

// command is engine id's 'wakegate engine': on a loopback port chosen at
// start, which it writes to addrFile once it can serve, and on its unix
// front in dir.
func (l *Local) command(id, dir, addrFile string) enginecmd.Command {
	c := l.cfg.Command
	c.State, c.Listen, c.AddrFile, c.Name = dir, "127.0.0.1:0", addrFile, identity.EngineName(id)
	c.ListenUnix = FrontSocket(dir)
	if l.cfg.Engine == KindDagger {
		// Several Dagger engines share this host: each in a network
		// namespace of its own.
		c.Engine, c.EngineBin, c.EngineNet, c.Buildkitd = enginecmd.KindDagger, l.cfg.EngineBin, string(NetPrivate), ""
	} else {
		c.Engine, c.Buildkitd = "", l.cfg.Buildkitd
	}
	return c
}

// Failed says, while the gateway waits for engine id to be ready, whether
// its process has already exited, with its last words; the gateway's wake
// then fails at once (gateway.Watcher).
func (l *Local) Failed(id string) error {
	l.mu.Lock()
	r, ok := l.procs[id]
	l.mu.Unlock()
	if !ok {
		return nil
	}
	select {
	case <-r.p.Exited():
		return r.failure(id)
	default:
		return nil
	}
}

var errExitedEarly = errors.New("engine exited before listening")

// waitAddr waits for the engine to write the address it listens on.
func waitAddr(ctx context.Context, path string, p *Process) (string, error) {
	var pause time.Duration
	for {
		if b, err := os.ReadFile(path); err == nil && bytes.HasSuffix(b, []byte("\n")) {
			return strings.TrimSpace(string(b)), nil
		}
		// Short pauses first, doubling to 20 ms: the engine writes the
		// file within milliseconds of its start, and the wake waits on it.
		pause = min(max(2*pause, 2*time.Millisecond), 20*time.Millisecond)
		t := time.NewTimer(pause)
		select {
		case <-p.Exited():
			t.Stop()
			return "", fmt.Errorf("%w: %v", errExitedEarly, p.err)
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("engine not listening: %w", ctx.Err())
		case <-t.C: // polling the file, bounded by ctx
		}
	}
}

// Stop sends the engine SIGTERM — it lets builds finish, stops BuildKit
// cleanly and exits — and waits, killing it if ctx ends first.
func (l *Local) Stop(ctx context.Context, id string) error {
	if !l.known(id) {
		return fmt.Errorf("local provider: no engine %q", id)
	}
	l.mu.Lock()
	r, ok := l.procs[id]
	delete(l.procs, id)
	l.mu.Unlock()
	if !ok {
		return nil
	}
	if err := r.p.Stop(ctx); err != nil {
		return fmt.Errorf("engine %s: %w", id, err)
	}
	return nil
}

func (l *Local) known(id string) bool {
	for _, x := range l.ids {
		if x == id {
			return true
		}
	}
	return false
}
