package policy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wakegate/wakegate/identity"
)

const (
	teamA = "[[allow]]\nname = \"team-a\"\n"
	teamB = "[[allow]]\nname = \"team-b\"\n"
	bad   = "[[allow]]\nname = \"team-b\"\ncolour = \"blue\"\n[[allow]]\n"
)

// logBuffer is a log destination safe to read while a watcher writes.
type logBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newWatcher(t *testing.T, content string) (*Watcher, string, *logBuffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.toml")
	write(t, path, content)
	logs := &logBuffer{}
	w, err := NewWatcher(path, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return w, path, logs
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func allows(p *Policy, name string) bool { return p.Allow(identity.Peer{Name: name}) == nil }

func TestNewWatcherRefusesABadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.toml")
	if _, err := NewWatcher(path, slog.New(slog.DiscardHandler)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NewWatcher on a missing file = %v, want ErrNotExist", err)
	}
	write(t, path, bad)
	var ps *Problems
	if _, err := NewWatcher(path, slog.New(slog.DiscardHandler)); !errors.As(err, &ps) || len(ps.List) != 2 {
		t.Errorf("NewWatcher on a bad file = %v, want its 2 problems", err)
	}
}

func TestReloadPicksUpAGoodChange(t *testing.T) {
	w, path, logs := newWatcher(t, teamA)
	if changed, err := w.Reload(); changed || err != nil {
		t.Fatalf("Reload of an unchanged file = %v, %v; want no change", changed, err)
	}
	write(t, path, teamB)
	if changed, err := w.Reload(); !changed || err != nil {
		t.Fatalf("Reload after a change = %v, %v; want a change", changed, err)
	}
	if p := w.Current(); allows(p, "team-a") || !allows(p, "team-b") {
		t.Fatalf("the new policy is not in force: %+v", p.Rules)
	}
	if !strings.Contains(logs.String(), "msg=\"policy reloaded\" policy="+path+" rules=1") {
		t.Errorf("the reload was not logged:\n%s", logs)
	}
}

func TestReloadKeepsThePolicyWhenTheFileIsBad(t *testing.T) {
	w, path, logs := newWatcher(t, teamA)
	before := w.Current()
	write(t, path, bad)
	changed, err := w.Reload()
	var ps *Problems
	if changed || !errors.As(err, &ps) {
		t.Fatalf("Reload of a bad file = %v, %v; want its problems", changed, err)
	}
	if w.Current() != before {
		t.Fatal("a bad file replaced the policy in force")
	}
	for _, want := range []string{
		`level=ERROR msg="policy file has a problem: keeping the policy in force" policy=` + path + ` err="` + path + `:3: unknown key \"colour\"`,
		`err="` + path + `:4: empty rule`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
	// Unchanged, the bad file still fails but is not logged again.
	n := strings.Count(logs.String(), "level=ERROR")
	if changed, err := w.Reload(); changed || err == nil {
		t.Fatalf("second Reload of the bad file = %v, %v; want its error again", changed, err)
	}
	if m := strings.Count(logs.String(), "level=ERROR"); m != n {
		t.Errorf("an unchanged bad file was logged again:\n%s", logs)
	}
	write(t, path, teamB)
	if changed, err := w.Reload(); !changed || err != nil || !allows(w.Current(), "team-b") {
		t.Fatalf("Reload after fixing the file = %v, %v", changed, err)
	}
}

func TestReloadKeepsThePolicyWhenTheFileIsGone(t *testing.T) {
	w, path, _ := newWatcher(t, teamA)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Reload(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Reload of a missing file = %v, want ErrNotExist", err)
	}
	if !allows(w.Current(), "team-a") {
		t.Fatal("a missing file dropped the policy in force")
	}
	// The same content back is read again and clears the error.
	write(t, path, teamA)
	if _, err := w.Reload(); err != nil {
		t.Fatalf("Reload once the file is back = %v", err)
	}
}

func TestRunReloadsUntilCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, path, _ := newWatcher(t, teamA)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.Run(ctx, time.Second)
		}()
		write(t, path, teamB)
		time.Sleep(time.Second)
		synctest.Wait()
		if !allows(w.Current(), "team-b") {
			t.Error("Run did not reload the changed file within one period")
		}
		cancel()
		<-done
	})
}
