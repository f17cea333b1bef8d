package daggertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/internal/bktest"
)

// Bin returns the directory of Dagger's binaries: $WAKEGATE_DAGGER_BIN,
// else bin/dagger at the repository's root. It must hold the engine's
// files and the dagger CLI.
func Bin(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("WAKEGATE_DAGGER_BIN")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "bin", "dagger")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"dagger-engine", "dagger-init", "dnsname", "dagger"} {
		if fi, err := os.Stat(filepath.Join(abs, f)); err != nil || fi.Mode().Perm()&0o111 == 0 {
			t.Fatalf("%s is missing from %s (%v): run 'make dagger' (unpacks ../shared/dagger/dagger-bin.tar.xz into bin/dagger), or set WAKEGATE_DAGGER_BIN", f, abs, err)
		}
	}
	return abs
}

// RequireHost fails unless this machine can run Dagger engines: root,
// runc, dnsmasq, iptables and the CNI plugins. (The engine's own check,
// engine.CheckDaggerHost, runs again when an engine starts.)
func RequireHost(t testing.TB) {
	t.Helper()
	bktest.RequireRoot(t)
	var missing []string
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		if _, err := os.Stat("/usr/sbin/dnsmasq"); err != nil {
			missing = append(missing, "dnsmasq (dnsmasq-base)")
		}
	}
	if _, err := os.Stat("/usr/sbin/xtables-legacy-multi"); err != nil {
		if _, err := os.Stat("/usr/sbin/xtables-nft-multi"); err != nil {
			missing = append(missing, "xtables (iptables)")
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		if _, err := os.Stat("/opt/cni/bin/bridge"); err != nil {
			missing = append(missing, "CNI plugins (containernetworking-plugins)")
		}
	}
	if len(missing) > 0 {
		t.Fatalf("Dagger's engine needs %s: run 'make deps' as root", strings.Join(missing, ", "))
	}
}

// CLI is the dagger CLI in bin.
func CLI(bin string) string { return filepath.Join(bin, "dagger") }

// Env is the dagger CLI's environment beyond the runner host: no
// telemetry, no Cloud, no update check or nag, no colours, and a home of
// its own so that nothing of the user's is read or written.
func Env(t testing.TB) []string {
	t.Helper()
	home := t.TempDir()
	return []string{
		"DO_NOT_TRACK=1", "DAGGER_NO_NAG=1", "DAGGER_NO_UPDATE_CHECK=1", "NO_COLOR=1",
		"DAGGER_CLOUD_TOKEN=", "OTEL_EXPORTER_OTLP_ENDPOINT=",
		"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "XDG_CACHE_HOME=" + filepath.Join(home, "cache"),
		"XDG_STATE_HOME=" + filepath.Join(home, "state"), "XDG_DATA_HOME=" + filepath.Join(home, "data"),
	}
}

// Command is a dagger CLI command line, to run as is or after 'wakegate
// connect --': env sets Env in a fresh working directory (no dagger.json
// above it), then the CLI runs args.
func Command(t testing.TB, bin string, args ...string) []string {
	t.Helper()
	cmd := append([]string{"env", "-C", t.TempDir()}, Env(t)...)
	return append(append(cmd, CLI(bin)), args...)
}

// Rootfs is a directory with a static busybox at /bin/busybox: a container
// rootfs that needs no pull.
func Rootfs(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bktest.StaticBusybox(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// DirectoryQuery is a GraphQL query that makes a directory with a new file
// and reads the file back: its answer holds Hello.
const DirectoryQuery = `{ directory { withNewFile(path: "hello.txt", contents: "hello from wakegate\n") { file(path: "hello.txt") { contents } } } }`

// Hello is what DirectoryQuery reads back.
const Hello = "hello from wakegate"

// QueryArgs runs DirectoryQuery without loading a module.
func QueryArgs(t testing.TB) []string {
	t.Helper()
	doc := filepath.Join(t.TempDir(), "q.graphql")
	if err := os.WriteFile(doc, []byte(DirectoryQuery), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"api", "query", "-M", "--doc", doc}
}

// ExecArgs runs script with busybox sh in a container made from rootfs,
// with plain progress, which shows "withExec CACHED" for a cached exec.
func ExecArgs(rootfs, script string) []string {
	return []string{"--progress", "plain", "-c",
		`container | with-rootfs $(host | directory ` + rootfs + `) | with-exec -- /bin/busybox sh -c "` + script + `" | stdout`}
}

var execCachedRE = regexp.MustCompile(`(?m)withExec CACHED`)
var execDoneRE = regexp.MustCompile(`(?m)withExec DONE`)

// ExecCached reports whether the dagger CLI's plain progress shows the
// withExec cached, and ExecRan whether it shows it run.
func ExecCached(out string) bool { return execCachedRE.MatchString(out) }

// ExecRan reports whether the plain progress shows the withExec run.
func ExecRan(out string) bool { return execDoneRE.MatchString(out) && !execCachedRE.MatchString(out) }

// CallTimeout bounds one dagger CLI run in tests: its client retries an
// unreachable engine for up to 10 minutes.
const CallTimeout = 3 * time.Minute

// Run runs the dagger CLI with args against the engine at runnerHost
// (unix:// or tcp://), for at most CallTimeout, and returns its combined
// output.
func Run(t testing.TB, bin, runnerHost string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, CLI(bin), args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(append(os.Environ(), Env(t)...), "_EXPERIMENTAL_DAGGER_RUNNER_HOST="+runnerHost)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("dagger %s: no answer within %s: %w", strings.Join(args, " "), CallTimeout, err)
	}
	return string(out), err
}

func repoRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && !strings.Contains(dir, "tools") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
