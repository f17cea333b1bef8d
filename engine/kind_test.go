package engine

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeDaggerBin is a directory with stand-ins for Dagger's binaries.
func fakeDaggerBin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range DaggerFiles {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestMissingDaggerBinaryIsNamedWithHowToGetIt(t *testing.T) {
	dir := fakeDaggerBin(t)
	os.Remove(filepath.Join(dir, "dagger-init"))
	err := CheckDaggerBin(dir)
	if err == nil || !strings.Contains(err.Error(), "dagger-init is missing") || !strings.Contains(err.Error(), "make dagger") ||
		strings.Contains(err.Error(), "dnsname is missing") {
		t.Fatalf("CheckDaggerBin without dagger-init = %v, want it named alone, with how to get it", err)
	}
	if err := CheckDaggerBin(""); err == nil || !strings.Contains(err.Error(), "--engine-bin") || !strings.Contains(err.Error(), "WAKEGATE_DAGGER_BIN") {
		t.Fatalf("CheckDaggerBin(\"\") = %v, want it to say what to pass", err)
	}
	if err := CheckDaggerBin(fakeDaggerBin(t)); err != nil {
		t.Fatalf("CheckDaggerBin of a full directory = %v", err)
	}
}

func TestDaggerEngineRunsUnderTheNamespaceInit(t *testing.T) {
	b := &Buildkitd{Kind: KindDagger, Self: "/usr/bin/wakegate", EngineBin: "/opt/dagger", Dir: "/state",
		Config: "/state/buildkitd.toml", Net: NetHost, StopTimeout: 45 * time.Second}
	bin, args := b.command()
	if bin != "/usr/bin/wakegate" || args[0] != NSInitCommand {
		t.Fatalf("command = %s %v, want wakegate %s", bin, args, NSInitCommand)
	}
	c, err := parseNSArgs(args[1:])
	if err != nil {
		t.Fatal(err)
	}
	want := nsConfig{Bin: "/opt/dagger", Root: "/state/root", Socket: "/state/engine.sock", Config: "/state/buildkitd.toml",
		Scratch: "/state/ns", Metrics: "/state/metrics.sock", Net: NetHost, StopTimeout: 45 * time.Second}
	if c != want {
		t.Fatalf("namespace init config = %+v, want %+v", c, want)
	}
}

func TestNamespaceInitRefusesToRunOutsideItsOwnPIDNamespace(t *testing.T) {
	b := &Buildkitd{Kind: KindDagger, EngineBin: t.TempDir(), Dir: t.TempDir()}
	_, err := NSInit(context.Background(), b.nsConfig().args()[1:], slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "PID namespace") {
		t.Fatalf("NSInit outside a new PID namespace = %v, want a refusal (it would remount the host's /proc)", err)
	}
}

func TestParseEngineKindAndNetwork(t *testing.T) {
	for in, want := range map[string]Kind{"": KindBuildkit, "buildkit": KindBuildkit, "dagger": KindDagger} {
		if k, err := ParseKind(in); err != nil || k != want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, k, err, want)
		}
	}
	if _, err := ParseKind("docker"); err == nil {
		t.Error("ParseKind(docker) succeeded")
	}
	for in, want := range map[string]Net{"": NetPrivate, "private": NetPrivate, "host": NetHost} {
		if n, err := ParseNet(in); err != nil || n != want {
			t.Errorf("ParseNet(%q) = %q, %v; want %q", in, n, err, want)
		}
	}
	if _, err := ParseNet("bridge"); err == nil {
		t.Error("ParseNet(bridge) succeeded")
	}
}

func TestLocalDaggerEnginesAreStartedAsDaggerInAPrivateNetwork(t *testing.T) {
	dir := shortDir(t)
	bin := fakeDaggerBin(t)
	argsFile := filepath.Join(dir, "args")
	wg := fakeWakegate(t, dir, `echo "$@" > `+argsFile+`
echo 127.0.0.1:1 > "$7"
sleep 60`)
	l, err := NewLocal(LocalConfig{Dir: dir, N: 1, Wakegate: wg, Engine: KindDagger, EngineBin: bin,
		Token: func(id string) (string, error) { return "tok", nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Stop(context.Background(), "engine-0") })
	if _, err := l.Start(t.Context(), "engine-0"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	args := string(b)
	if !strings.Contains(args, "--engine dagger --engine-bin "+bin+" --engine-net private") || strings.Contains(args, "--buildkitd") {
		t.Fatalf("local engine arguments %q: want --engine dagger --engine-bin DIR --engine-net private and no --buildkitd", args)
	}
	if _, err := NewLocal(LocalConfig{Dir: dir, N: 1, Wakegate: wg, Engine: KindDagger, EngineBin: t.TempDir(),
		Token: func(id string) (string, error) { return "tok", nil }}); err == nil || !strings.Contains(err.Error(), "dagger-engine is missing") {
		t.Fatalf("NewLocal with an empty --engine-bin = %v, want the missing binary named", err)
	}
}

func TestDaggerStartWaitsForAPreviousEngineStillHoldingItsLock(t *testing.T) {
	lock := filepath.Join(t.TempDir(), "dagger-engine.lock")
	if err := waitUnlocked(lock, time.Second); err != nil {
		t.Fatalf("no lock file: %v, want nil", err)
	}
	f, err := os.Create(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if err := waitUnlocked(lock, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "still locked") {
		t.Fatalf("a held lock = %v, want an error after the bound", err)
	}
	done := make(chan error, 1)
	go func() { done <- waitUnlocked(lock, 10*time.Second) }()
	select {
	case err := <-done:
		t.Fatalf("waitUnlocked returned %v while the lock was held", err)
	case <-time.After(300 * time.Millisecond):
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN) // the previous engine has stopped
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a lock released meanwhile = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitUnlocked did not notice the lock released")
	}
}

func TestStateUnderAnOverlaidDirectoryIsKeptVisible(t *testing.T) {
	tmp := shortDir(t)
	// Dagger's binaries under /opt (overlaid), the state in /tmp (not):
	// only the former is held, to be bound back over its overlay.
	bin := "/opt"
	c := nsConfig{Bin: bin, Root: filepath.Join(tmp, "root"), Socket: filepath.Join(tmp, "engine.sock"), Config: filepath.Join(tmp, "buildkitd.toml"),
		Scratch: filepath.Join(tmp, "ns"), Metrics: filepath.Join(tmp, "metrics.sock")}
	for _, d := range []string{c.Root, c.Scratch} {
		os.MkdirAll(d, 0o700)
	}
	h, err := holdVisible(c)
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	if len(h.paths) != 1 || h.paths[0] != bin {
		t.Fatalf("held %v, want only %s", h.paths, bin)
	}
	for p, want := range map[string]bool{"/var/lib/wakegate": true, "/usr/local/bin": true, "/etc": true, "/usr/lib/cni": false, "/tmp/x": false, "/optimal": false} {
		if got := underOverlay(p); got != want {
			t.Errorf("underOverlay(%s) = %v, want %v", p, got, want)
		}
	}
}
