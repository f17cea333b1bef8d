package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeWakegate writes a stand-in for 'wakegate engine' running script; $3
// is its state directory and $7 its --addr-file.
func fakeWakegate(t *testing.T, dir, script string) string {
	t.Helper()
	bin := filepath.Join(dir, "wakegate")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func newFakeLocal(t *testing.T, dir, bin string) *Local {
	t.Helper()
	l, err := NewLocal(LocalConfig{Dir: dir, N: 1, Wakegate: bin, Buildkitd: "buildkitd",
		Token: func(id string) (string, error) { return "engine-tok-" + id, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Stop(context.Background(), "engine-0") })
	return l
}

func TestLocalEngineThatExitsAtOnceSaysWhy(t *testing.T) {
	dir := shortDir(t)
	// An earlier run's lines are not this run's last words.
	os.MkdirAll(filepath.Join(dir, "engine-0"), 0o700)
	os.WriteFile(filepath.Join(dir, "engine-0", "engine.log"), []byte("an old run's line\n"), 0o600)
	bin := fakeWakegate(t, dir, `echo "wakegate: engine: buildkitd.toml: unknown key gc (token $WAKEGATE_TOKEN)" >&2; exit 1`)
	l := newFakeLocal(t, dir, bin)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	began := time.Now()
	_, err := l.Start(ctx, "engine-0")
	if err == nil {
		t.Fatal("Start succeeded with an engine that exits at once")
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("Start took %s to notice the engine exited", took)
	}
	msg := err.Error()
	if !strings.Contains(msg, "wakegate: engine: buildkitd.toml: unknown key gc") {
		t.Fatalf("Start error %q does not carry the engine's own last words", msg)
	}
	if strings.Contains(msg, "engine-tok-") || strings.Contains(msg, "an old run's line") || strings.Contains(msg, "\n") {
		t.Fatalf("Start error %q: want one line of this run's words, token blanked", msg)
	}
}

func TestLocalEngineThatDiesBeforeReadyIsReportedWithItsLastWords(t *testing.T) {
	dir := shortDir(t)
	fifo := filepath.Join(dir, "go")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// It listens (writes its address), then waits for the test, then its
	// buildkitd fails as one without runc does.
	bin := fakeWakegate(t, dir, `echo 127.0.0.1:1 > "$7"
read x < `+fifo+`
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "buildkitd: noise $i" >> "$3/buildkitd.log"; done
echo 'buildkitd: failed to create worker: exec: "runc": executable file not found in $PATH' >> "$3/buildkitd.log"
echo "wakegate: engine process exited before it was ready: exit status 1" >&2
exit 1`)
	l := newFakeLocal(t, dir, bin)
	addr, err := l.Start(t.Context(), "engine-0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	// Its unix front, not the mTLS address it wrote: this gateway reaches
	// its own child without TLS.
	if want := "unix://" + filepath.Join(dir, "engine-0", "front.sock"); addr != want {
		t.Fatalf("Start = %q, want %q", addr, want)
	}
	if err := l.Failed("engine-0"); err != nil {
		t.Fatalf("Failed while the engine runs = %v, want nil", err)
	}
	os.WriteFile(fifo, []byte("go\n"), 0o600) // opens the fifo: the engine goes on, and dies
	l.mu.Lock()
	p := l.procs["engine-0"].p
	l.mu.Unlock()
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("the fake engine did not exit")
	}
	err = l.Failed("engine-0")
	if err == nil {
		t.Fatal("Failed = nil after the engine exited")
	}
	msg := err.Error()
	for _, want := range []string{`exec: "runc": executable file not found`, "exited before it was ready", "exit status 1"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Failed = %q, want it to say %q", msg, want)
		}
	}
	if n := strings.Count(msg, " | ") + 1; n > lastWordsLines || len(msg) > lastWordsBytes+200 || strings.Contains(msg, "\n") {
		t.Errorf("Failed = %q (%d lines, %d bytes): want one line of at most %d lines and about %d bytes", msg, n, len(msg), lastWordsLines, lastWordsBytes)
	}
}

func TestLastWordsAreBounded(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "log")
	os.WriteFile(p, []byte(strings.Repeat(strings.Repeat("x", 500)+"\n", 40)+"the reason\n"), 0o600)
	got := lastWords(nil, logMark{path: p})
	if len(got) > lastWordsBytes || !strings.HasSuffix(got, "the reason") {
		t.Fatalf("lastWords = %d bytes ending %q; want at most %d ending with the last line", len(got), got[max(0, len(got)-20):], lastWordsBytes)
	}
}

func TestCheckLocalHostSaysWhatToInstall(t *testing.T) {
	dir := t.TempDir()
	bkd := filepath.Join(dir, "buildkitd")
	os.WriteFile(bkd, []byte("#!/bin/sh\n"), 0o755)
	t.Setenv("PATH", dir) // no runc here
	err := CheckLocalHost(bkd)
	if err == nil || !strings.Contains(err.Error(), "runc not found: apt-get install runc, or run 'make deps'") {
		t.Fatalf("CheckLocalHost without runc = %v, want what to install", err)
	}
	os.WriteFile(filepath.Join(dir, "runc"), []byte("#!/bin/sh\n"), 0o755)
	os.Chmod(bkd, 0o644)
	err = CheckLocalHost(bkd)
	if err == nil || !strings.Contains(err.Error(), "is not an executable file") || strings.Contains(err.Error(), "runc") {
		t.Fatalf("CheckLocalHost with a non-executable buildkitd = %v", err)
	}
	os.Chmod(bkd, 0o755)
	if os.Geteuid() == 0 {
		if err := CheckLocalHost(bkd); err != nil {
			t.Fatalf("CheckLocalHost as root with runc and buildkitd = %v", err)
		}
	} else if err := CheckLocalHost(bkd); err == nil || !strings.Contains(err.Error(), "need root") {
		t.Fatalf("CheckLocalHost as non-root = %v", err)
	}
}
