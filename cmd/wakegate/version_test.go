package main

import (
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// TestVersionNamesTheBuild: the built binary reports its revision from
// the build information, through 'version' and '--version' alike.
func TestVersionNamesTheBuild(t *testing.T) {
	bin := os.Getenv("WAKEGATE_BIN") // built by TestMain from this checkout
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse: %v", err)
	}
	want := regexp.MustCompile(`^wakegate \S+ \(` + string(rev[:12]) + `(-dirty)?, [0-9T:Z-]+\) ` + regexp.QuoteMeta(runtime.Version()) + `\n$`)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("wakegate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if !want.Match(out) {
			t.Errorf("wakegate %s printed %q, want %s", strings.Join(args, " "), out, want)
		}
	}
	if out, err := exec.Command(bin, "version", "extra").CombinedOutput(); err == nil {
		t.Errorf("wakegate version extra succeeded: %s", out)
	}
}
