package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/internal/bktest"
)

// These end-to-end tests run the real wakegate commands in-process against
// real buildkitd and buildctl. `make test` builds both into bin/ and exports
// their paths; a missing tool fails the test with the fix rather than
// skipping it.

func tool(t *testing.T, env, name string) string { return bktest.Tool(t, env, name) }
func requireRoot(t *testing.T)                   { bktest.RequireRoot(t) }
func staticBusybox(t *testing.T) string          { return bktest.StaticBusybox(t) }

// buildContext writes a Dockerfile whose RUN step needs no pulled image.
func buildContext(t *testing.T, busybox string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "rootfs", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs", "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	dockerfile := "FROM scratch\nCOPY rootfs/ /\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo built > /built.txt\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func buildctlArgs(dir string) []string {
	return []string{"build", "--frontend", "dockerfile.v0", "--local", "context=" + dir, "--local", "dockerfile=" + dir, "--progress", "plain"}
}

var runStepRE = regexp.MustCompile(`(?m)^#(\d+) \[\d+/\d+\] RUN `)

// runStepCached reports whether buildctl's plain progress shows the RUN
// step as CACHED.
func runStepCached(t *testing.T, out string) bool {
	t.Helper()
	m := runStepRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no RUN step in build output:\n%s", out)
	}
	return regexp.MustCompile(`(?m)^#` + m[1] + ` CACHED$`).MatchString(out)
}

// logWatch is an io.Writer that keeps what is written and lets a test wait
// for a line matching a pattern.
type logWatch struct {
	mu      sync.Mutex // guards buf and changed
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	close(w.changed)
	w.changed = make(chan struct{})
	return len(p), nil
}

func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor waits until re matches at or after offset from, returning the
// submatches and the end offset of the match.
func (w *logWatch) waitFor(t *testing.T, re *regexp.Regexp, from int, timeout time.Duration) ([]string, int) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		s := w.buf.String()
		ch := w.changed
		w.mu.Unlock()
		if from <= len(s) {
			if loc := re.FindStringSubmatchIndex(s[from:]); loc != nil {
				var subs []string
				for i := 0; i < len(loc); i += 2 {
					if loc[i] < 0 {
						subs = append(subs, "")
						continue
					}
					subs = append(subs, s[from+loc[i]:from+loc[i+1]])
				}
				return subs, from + loc[1]
			}
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %q; output so far:\n%s", timeout, re, s)
		}
	}
}

func (w *logWatch) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Len()
}

// warnings are the WARN and ERROR lines of a log, at most 40: what a
// failing test shows of a busy process.
func warnings(w *logWatch) string {
	var out []string
	for _, l := range strings.Split(w.String(), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	if len(out) > 40 {
		out = append(out[:40], fmt.Sprintf("… %d more", len(out)-40))
	}
	return strings.Join(out, "\n")
}

// background runs a wakegate command in-process until the test ends.
func background(t *testing.T, args ...string) *logWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := newLogWatch()
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, logs, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("wakegate %s: %v", args[0], err)
			}
		case <-time.After(90 * time.Second):
			t.Errorf("wakegate %s did not stop within 90s of its context ending", args[0])
		}
	})
	return logs
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out := newLogWatch()
	if err := run(t.Context(), args, out, out); err != nil {
		t.Fatalf("wakegate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out.String()
}

// buildThrough runs buildctl on bctx through 'wakegate connect -- buildctl'
// to the gateway at gwAddr, and returns connect's and buildctl's output;
// a failure shows the gateway's log too.
func buildThrough(t *testing.T, name, gwAddr, creds, buildctl, bctx string, gw *logWatch) string {
	t.Helper()
	out := newLogWatch()
	args := append([]string{"connect", "--gateway", gwAddr, "--creds", creds, "--listen", "127.0.0.1:0", "--", buildctl}, buildctlArgs(bctx)...)
	if err := run(t.Context(), args, out, out); err != nil {
		t.Fatalf("%s: %v\n%s\ngateway log:\n%s", name, err, out, gw)
	}
	return out.String()
}
