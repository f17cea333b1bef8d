package main

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// shortTempDir is a fresh directory with a path short enough for a unix
// socket (sun_path holds 108 bytes; t.TempDir() is long).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestConnectListenBadFlagsFailBeforeAnythingStarts: a --listen other
// machines can reach is refused unless --unsafe-listen says so. The rows
// that pass validation use --wait (which opens no listener) and fail at
// the missing credentials instead.
func TestConnectListenBadFlagsFailBeforeAnythingStarts(t *testing.T) {
	t.Setenv("WAKEGATE_TOKEN", "")
	base := []string{"connect", "--gateway", "h:1", "--creds", "/nonexistent"}
	const reachable = "is reachable from other machines: anyone who reaches it uses this job's identity; listen on 127.0.0.1 or unix:///path, or pass --unsafe-listen"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "0.0.0.0:9080"}, "connect: --listen 0.0.0.0:9080 " + reachable},
		{[]string{"--listen", ":9080"}, "--listen :9080 " + reachable},
		{[]string{"--listen", "[::]:9080"}, "--listen [::]:9080 " + reachable},
		{[]string{"--listen", "10.1.2.3:9080"}, reachable},
		{[]string{"--listen", "runner.example.com:9080"}, reachable},
		{[]string{"--listen", "0.0.0.0:0", "--", "true"}, reachable},
		{[]string{"--listen", "0.0.0.0:0", "--background", "--pid-file", "p"}, reachable},
		{[]string{"--listen", "unix://"}, `--listen "unix://": no socket path`},
		{[]string{"--listen", "unix:///" + strings.Repeat("a", 120)}, "over the 107"},
		{[]string{"--listen", "tcp://127.0.0.1:9080"}, "want HOST:PORT or unix:///PATH"},
		{[]string{"--listen", "nonsense"}, `--listen "nonsense"`},
		// Accepted: they get as far as the credentials.
		{[]string{"--wait", "--listen", "0.0.0.0:9080", "--unsafe-listen"}, "certs issue"},
		{[]string{"--wait", "--listen", "127.0.0.2:9080"}, "certs issue"},
		{[]string{"--wait", "--listen", "[::1]:9080"}, "certs issue"},
		{[]string{"--wait", "--listen", "localhost:9080"}, "certs issue"},
		{[]string{"--wait", "--listen", "unix:///tmp/wakegate.sock"}, "certs issue"},
	} {
		args := append(append([]string{}, base...), tc.args...)
		out := newLogWatch()
		err := run(t.Context(), args, out, out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("wakegate %s = %v, want an error containing %q", strings.Join(args, " "), err, tc.want)
		}
	}
}

// TestConnectUnixListenIsCheckedBeforeEnrolment: a socket path that is
// taken fails before the token is spent, and what is there is left alone.
//
// Not parallel: it sets the process environment.
func TestConnectUnixListenIsCheckedBeforeEnrolment(t *testing.T) {
	t.Setenv("WAKEGATE_TOKEN", "")
	h := newProviderHarness(t)
	tok, err := h.ca.Clients.Token("ci-job", []string{"ci-job"}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, "live.sock")
	ln, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	for _, tc := range []struct{ path, want string }{
		{file, file + " exists and is not a socket"},
		{live, "another sidecar is serving " + live},
	} {
		args := []string{"connect", "--gateway", "127.0.0.1:1", "--token-file", tokFile, "--ca-url", h.caSvc.url,
			"--ca-fingerprint", h.ca.Fingerprint(), "--wait-timeout", "5s", "--listen", "unix://" + tc.path, "--", "true"}
		out := newLogWatch()
		err := run(t.Context(), args, out, out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("wakegate %s = %v, want an error containing %q", strings.Join(args, " "), err, tc.want)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("the refused file now holds %q (%v)", b, err)
	}
	if fi, err := os.Lstat(live); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Errorf("the live socket was disturbed: %v", err)
	}
	h.enrol(t, tok) // fails the test if a case spent it
}

// TestEndToEndBuildThroughUnixSocket runs a real build with 'connect
// --listen unix:///PATH -- buildctl build': buildctl finds the sidecar
// through BUILDKIT_HOST=unix:///PATH, the socket is 0600 while it serves
// and gone when connect returns.
func TestEndToEndBuildThroughUnixSocket(t *testing.T) {
	g := startCertGateway(t)
	buildctl := tool(t, "WAKEGATE_BUILDCTL", "buildctl")
	bctx := buildContext(t, staticBusybox(t))
	creds := filepath.Join(t.TempDir(), "creds")
	mustRun(t, "certs", "issue", "--dir", g.caDir, "--name", "sock-job", "--out", creds)
	sock := filepath.Join(shortTempDir(t), "bk.sock")

	// CMD reports what it was given, then becomes buildctl with no --addr:
	// BUILDKIT_HOST is all it has to find the engine.
	script := `echo "host=$BUILDKIT_HOST dagger=$_EXPERIMENTAL_DAGGER_RUNNER_HOST mode=$(stat -c %a "${BUILDKIT_HOST#unix://}")" && exec "$0" "$@"`
	args := append([]string{"connect", "--gateway", g.addr, "--creds", creds, "--listen", "unix://" + sock, "--wait-timeout", "60s",
		"--", "sh", "-c", script, buildctl}, buildctlArgs(bctx)...)
	out := newLogWatch()
	if err := run(t.Context(), args, out, out); err != nil {
		t.Fatalf("connect --listen unix://%s -- buildctl: %v\n%s\ngateway log:\n%s", sock, err, out, g.logs)
	}
	if want := "host=unix://" + sock + " dagger=unix://" + sock + " mode=600"; !strings.Contains(out.String(), want) {
		t.Fatalf("CMD did not see %q:\n%s", want, out)
	}
	runStepCached(t, out.String()) // fails the test if buildctl built nothing
	// The build went through the gateway, as this job.
	g.logs.waitFor(t, regexp.MustCompile(`msg="connection closed" identity=sock-job `), 0, 10*time.Second)
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket after connect returned: Lstat = %v, want it removed", err)
	}
}
