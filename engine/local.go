package engine

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
)

// Local is the embedded default provider: each engine of the pool is a
// buildkitd process on this machine with its own state directory under Dir,
// which persists across stops like a cache volume.
type Local struct {
	dir   string
	bin   string
	ids   []string
	log   *slog.Logger
	mu    sync.Mutex          // guards procs
	procs map[string]*Process // running engines by id
}

// NewLocal returns a provider of n engines named engine-0 … engine-(n-1),
// run from the buildkitd binary bin with state under dir.
func NewLocal(dir, bin string, n int, log *slog.Logger) (*Local, error) {
	if n < 1 {
		return nil, fmt.Errorf("local provider: need at least one engine, got %d", n)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Local{dir: dir, bin: bin, log: log, procs: map[string]*Process{}}
	for i := range n {
		l.ids = append(l.ids, fmt.Sprintf("engine-%d", i))
	}
	for _, id := range l.ids {
		if b := l.buildkitd(id); len(b.Socket()) > maxSocketPath {
			return nil, fmt.Errorf("local provider: socket path %s is longer than %d bytes; use a shorter --state", b.Socket(), maxSocketPath)
		}
	}
	return l, nil
}

func (l *Local) buildkitd(id string) *Buildkitd {
	return &Buildkitd{Bin: l.bin, Dir: filepath.Join(l.dir, id), Log: l.log}
}

// Engines lists the engine ids.
func (l *Local) Engines(context.Context) ([]string, error) { return l.ids, nil }

// Start launches the engine's buildkitd unless it is already running, and
// returns its socket address.
func (l *Local) Start(ctx context.Context, id string) (string, error) {
	b, err := l.lookup(id)
	if err != nil {
		return "", err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.procs[id]; ok {
		select {
		case <-p.Exited():
			// It crashed or was killed since; start a new one.
			l.log.Warn("engine process had exited", "engine", id, "pid", p.Pid(), "err", p.err)
		default:
			return b.Addr(), nil
		}
	}
	p, err := b.Start()
	if err != nil {
		return "", fmt.Errorf("engine %s: %w", id, err)
	}
	l.procs[id] = p
	l.log.Info("engine process started", "engine", id, "pid", p.Pid(), "state", b.Dir)
	return b.Addr(), nil
}

// Stop stops the engine's buildkitd with SIGTERM and waits for it, killing it
// when ctx ends first.
func (l *Local) Stop(ctx context.Context, id string) error {
	if _, err := l.lookup(id); err != nil {
		return err
	}
	l.mu.Lock()
	p, ok := l.procs[id]
	delete(l.procs, id)
	l.mu.Unlock()
	if !ok {
		return nil
	}
	if err := p.Stop(ctx); err != nil {
		return fmt.Errorf("engine %s: %w", id, err)
	}
	return nil
}

func (l *Local) lookup(id string) (*Buildkitd, error) {
	for _, x := range l.ids {
		if x == id {
			return l.buildkitd(id), nil
		}
	}
	return nil, fmt.Errorf("local provider: no engine %q", id)
}
