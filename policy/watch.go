package policy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Watcher holds a gateway's policy and reloads it when its file changes. A
// file with problems never replaces a good policy: the gateway keeps
// judging by the last good one and logs what is wrong.
type Watcher struct {
	path    string
	log     *slog.Logger
	current atomic.Pointer[Policy] // read at every handshake, so lock-free

	// mu serialises Reload, so that two reloads never publish out of order;
	// it guards sum and fileErr.
	mu      sync.Mutex
	sum     [sha256.Size]byte // of the content last read, applied or not
	fileErr error             // why that content (or the last read) was not applied; nil if it was
}

// NewWatcher loads the policy at path; an error (a *Problems for a bad
// file) means the gateway must not start.
func NewWatcher(path string, log *slog.Logger) (*Watcher, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	p, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	w := &Watcher{path: path, log: log, sum: sha256.Sum256(data)}
	w.current.Store(p)
	log.Info("policy loaded", "policy", path, "rules", len(p.Rules))
	return w, nil
}

// Current is the policy in force.
func (w *Watcher) Current() *Policy { return w.current.Load() }

// Reload re-reads the file and, when its content changed and parses, puts
// it in force (changed is true). A file that cannot be read or has problems
// leaves the policy in force and is logged, once per content; err says why
// for as long as the file stays that way.
func (w *Watcher) Reload() (changed bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, err := os.ReadFile(w.path)
	if err != nil {
		err = fmt.Errorf("read policy: %w", err)
		if w.fileErr == nil || w.fileErr.Error() != err.Error() {
			w.log.Error("cannot read the policy file: keeping the policy in force", "policy", w.path, "err", err)
		}
		// Forget the content: whatever the file holds when it is back is read.
		w.sum, w.fileErr = [sha256.Size]byte{}, err
		return false, err
	}
	sum := sha256.Sum256(data)
	if sum == w.sum {
		return false, w.fileErr
	}
	w.sum = sum
	p, err := Parse(w.path, data)
	if err != nil {
		w.fileErr = err
		if ps, ok := err.(*Problems); ok {
			for _, pr := range ps.List {
				w.log.Error("policy file has a problem: keeping the policy in force", "policy", w.path, "err", (&Problems{Source: ps.Source, List: []Problem{pr}}).Error())
			}
		} else {
			w.log.Error("policy file not loaded: keeping the policy in force", "policy", w.path, "err", err)
		}
		return false, err
	}
	w.fileErr = nil
	w.current.Store(p)
	w.log.Info("policy reloaded", "policy", w.path, "rules", len(p.Rules))
	return true, nil
}

// Run calls Reload every period until ctx ends. Reload logs its own
// failures.
func (w *Watcher) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.Reload() // it logs its own failures
		}
	}
}
