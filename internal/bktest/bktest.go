// Package bktest gives wakegate's tests what running real BuildKit needs:
// the buildkitd and buildctl that 'make tools' builds, root and runc, a
// static busybox for RUN steps, and a count of leftover buildkitd
// processes. A missing piece fails the test with the command that fixes
// it; nothing is skipped.
//
// Only tests import it.
package bktest

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Tool returns the absolute path of a BuildKit binary: $env, else bin/name
// at the repository's root.
func Tool(t testing.TB, env, name string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(repoRoot(t), "bin", name)
	}
	abs, err := filepath.Abs(p)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if err != nil {
		t.Fatalf("%s not found (%v): run 'make tools' or set %s", name, err, env)
	}
	return abs
}

// Buildkitd is Tool for buildkitd, after RequireRoot.
func Buildkitd(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	return Tool(t, "WAKEGATE_BUILDKITD", "buildkitd")
}

// Buildctl is Tool for buildctl.
func Buildctl(t testing.TB) string {
	t.Helper()
	return Tool(t, "WAKEGATE_BUILDCTL", "buildctl")
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

// RequireRoot fails unless the test runs as root with runc installed, as
// buildkitd's OCI worker needs here.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("buildkitd needs root here: run 'make test' as root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatal("runc not found: run 'make deps' (installs runc from Debian's packages)")
	}
}

// StaticBusybox returns a statically linked busybox to copy into build
// contexts: no image can be pulled here, so RUN steps use it.
func StaticBusybox(t testing.TB) string {
	t.Helper()
	p := os.Getenv("WAKEGATE_BUSYBOX")
	if p == "" {
		p = "/bin/busybox"
	}
	f, err := elf.Open(p)
	if err != nil {
		t.Fatalf("busybox %s: %v: run 'make deps' (installs busybox-static)", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Fatalf("busybox %s is dynamically linked: run 'make deps' (installs busybox-static)", p)
		}
	}
	return p
}

// CountBuildkitd counts running buildkitd processes whose command line
// names dir.
func CountBuildkitd(dir string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	n := 0
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.HasSuffix(args[0], "buildkitd") && strings.Contains(string(b), dir) {
			n++
		}
	}
	return n
}
