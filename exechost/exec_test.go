package exechost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const execTestToken = "tok-7f3a9c1e5d2b"

// writeScript writes an executable sh script to dir and returns a command
// line that runs it.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return "'" + p + "'"
}

// newTestExec fills what a test leaves out: two engines, a stop command
// that succeeds, a fixed token, and OUT=<dir> in the environment for
// scripts to write what they saw.
func newTestExec(t *testing.T, dir string, cfg Config) *Provider {
	t.Helper()
	if cfg.IDs == nil {
		cfg.IDs = []string{"engine-0", "engine-1"}
	}
	if cfg.Start == "" {
		cfg.Start = "echo 127.0.0.1:1234"
	}
	if cfg.Stop == "" {
		cfg.Stop = "true"
	}
	if cfg.Token == nil {
		cfg.Token = func(string) (string, error) { return execTestToken, nil }
	}
	cfg.Env = append(cfg.Env, "OUT="+dir)
	x, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestExecStartReturnsTheAddressAndPassesTheTokenOnlyInTheEnvironment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var asked []string
	var logs bytes.Buffer
	x := newTestExec(t, dir, Config{
		Start: writeScript(t, dir, "start", `
echo "$0 $@" > "$OUT/argv"
printf '%s\n' "$WAKEGATE_ENGINE" "$WAKEGATE_TOKEN" "$WAKEGATE_CA_URL" > "$OUT/env"
echo "creating machine"
printf '  127.0.0.1:1234  \r\n\n\n'
`),
		Token: func(id string) (string, error) {
			asked = append(asked, id)
			return execTestToken, nil
		},
		Env: []string{"WAKEGATE_CA_URL=https://ca.example:8443"},
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	addr, err := x.Start(t.Context(), "engine-1")
	if err != nil {
		t.Fatal(err)
	}
	if addr != "tls://127.0.0.1:1234" {
		t.Errorf("address = %q, want tls://127.0.0.1:1234", addr)
	}
	if len(asked) != 1 || asked[0] != "engine-1" {
		t.Errorf("token asked for %q, want once for engine-1", asked)
	}
	if got, want := readFile(t, filepath.Join(dir, "env")), "engine-1\n"+execTestToken+"\nhttps://ca.example:8443\n"; got != want {
		t.Errorf("script saw WAKEGATE_ENGINE, WAKEGATE_TOKEN, WAKEGATE_CA_URL = %q, want %q", got, want)
	}
	argv := readFile(t, filepath.Join(dir, "argv"))
	if strings.Contains(argv, execTestToken) {
		t.Errorf("token in the script's arguments: %q", argv)
	}
	if !strings.Contains(argv, "start") {
		t.Errorf("argv file = %q, want the script's path", argv)
	}
	if strings.Contains(logs.String(), execTestToken) {
		t.Errorf("token in the log: %s", logs.String())
	}
}

func TestExecStartRefusesOutputThatIsNotAnAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, start, want string
	}{
		{"no output", "true", "start command printed no address; it must print host:port as its last line"},
		{"blank lines only", "printf '\\n  \\n'", "start command printed no address"},
		{"garbage last line", "echo 10.0.0.7:1234; echo machine ready", `printed "machine ready" as its last line`},
		{"no port", "echo 10.0.0.7", "missing port in address"},
		{"empty port", "echo 10.0.0.7:", "port is not a number"},
		{"port out of range", "echo 10.0.0.7:70000", "port is not a number"},
		{"no host", "echo :1234", "no host"},
		{"a scheme", "echo tls://10.0.0.7:1234", "without a scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			x := newTestExec(t, t.TempDir(), Config{Start: tc.start})
			addr, err := x.Start(t.Context(), "engine-0")
			if err == nil {
				t.Fatalf("Start returned %q, want an error", addr)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "exec provider: start engine-0: ") {
				t.Errorf("error %q does not name the command and engine", err)
			}
			if !strings.Contains(err.Error(), "it must print host:port as its last line") {
				t.Errorf("error %q does not say what to print", err)
			}
		})
	}
}

func TestExecStartThatPrintsTheTokenDoesNotPutItInTheError(t *testing.T) {
	t.Parallel()
	x := newTestExec(t, t.TempDir(), Config{Start: `echo "$WAKEGATE_TOKEN"`})
	_, err := x.Start(t.Context(), "engine-0")
	if err == nil {
		t.Fatal("Start succeeded, want an error")
	}
	if strings.Contains(err.Error(), execTestToken) {
		t.Errorf("token in the error: %v", err)
	}
}

func TestExecFailingStartReportsExitStatusAndStderrButNotTheToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var logs bytes.Buffer
	x := newTestExec(t, dir, Config{
		Start: writeScript(t, dir, "start", `
echo "127.0.0.1:1234"
echo "booting with token $WAKEGATE_TOKEN" >&2
echo "quota exceeded in region ams" >&2
exit 3
`),
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	_, err := x.Start(t.Context(), "engine-1")
	if err == nil {
		t.Fatal("Start succeeded, want an error")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "exec provider: start engine-1: exit status 3: ") {
		t.Errorf("error %q does not start with the command kind, engine and exit status", msg)
	}
	if !strings.HasSuffix(msg, "quota exceeded in region ams") {
		t.Errorf("error %q does not end with the stderr tail", msg)
	}
	if strings.Contains(msg, execTestToken) {
		t.Errorf("token in the error: %q", msg)
	}
	if !strings.Contains(msg, "booting with token [token]") {
		t.Errorf("error %q does not show where the token was scrubbed", msg)
	}
	if strings.Contains(logs.String(), execTestToken) {
		t.Errorf("token in the log: %s", logs.String())
	}
}

func TestExecFailureQuotesOnlyTheTailOfALongStderr(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// About 150 KiB of noise, more than is kept, then the reason.
	x := newTestExec(t, dir, Config{Stop: writeScript(t, dir, "stop", `
i=0
while [ $i -lt 5000 ]; do
	echo "noise line $i of a chatty cloud CLI, padded out to be long" >&2
	i=$((i+1))
done
echo "machine not found" >&2
exit 1
`)})
	err := x.Stop(t.Context(), "engine-0")
	if err == nil {
		t.Fatal("Stop succeeded, want an error")
	}
	msg := err.Error()
	if !strings.HasSuffix(msg, "machine not found") {
		t.Errorf("error does not end with the last stderr line: %q", msg)
	}
	if len(msg) > execErrTail+200 {
		t.Errorf("error is %d bytes, want the stderr quoted to about %d", len(msg), execErrTail)
	}
	if strings.Contains(msg, "noise line 0 ") {
		t.Errorf("error quotes the head of stderr: %q", msg)
	}
	// The quote starts at a whole line.
	if _, rest, ok := strings.Cut(msg, "exit status 1: …"); !ok || !strings.HasPrefix(rest, "noise line ") {
		t.Errorf("error does not quote whole lines after the exit status: %q", msg)
	}
}

func TestExecTailBufferKeepsTheLastWholeLines(t *testing.T) {
	t.Parallel()
	var written []byte
	var tb tailBuffer
	for i := range 20000 {
		line := fmt.Appendf(nil, "line %d\n", i)
		tb.Write(line)
		written = append(written, line...)
		if i%97 != 0 && i != 19999 {
			continue
		}
		if got := tb.Bytes(); !bytes.HasSuffix(written, got) || len(got) > execOutputCap || len(got) < min(len(written), execOutputCap-len("line 19999\n")) {
			t.Fatalf("after %d lines kept %d bytes that are not the whole lines of the last %d", i+1, len(got), execOutputCap)
		}
	}
	if !bytes.HasPrefix(tb.Bytes(), []byte("line ")) {
		t.Errorf("kept bytes start inside a line: %.20q", tb.Bytes())
	}

	big := bytes.Repeat([]byte("x"), execOutputCap+10)
	big = append(big, "\nlast\n"...)
	tb.Write(big)
	if got := tb.Bytes(); string(got) != "last\n" {
		t.Errorf("after one write larger than the cap, Bytes = %.40q, want %q", got, "last\n")
	}
}

// processGone reports whether pid no longer runs. A zombie counts as gone:
// an orphan waits for init to reap it, and some containers' init never does.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

// waitGone fails t unless pid is gone before a generous deadline. SIGTERM
// to a process group is delivered to every member at once, but an orphan
// is reaped a moment later, so this polls.
func waitGone(t *testing.T, what string, pid int) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !processGone(pid) {
		select {
		case <-deadline.C:
			syscall.Kill(pid, syscall.SIGKILL) // leave no process behind
			t.Fatalf("%s (pid %d) still runs after Start returned", what, pid)
		case <-tick.C:
		}
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the script did not record its pid before its ctx ended: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("pid file %s holds %q", path, b)
	}
	return pid
}

func TestExecHangingStartIsStoppedWithItsContext(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, trap string
	}{
		{"command that obeys SIGTERM", ""},
		// The group ignores SIGTERM: os/exec kills the shell after the wait
		// delay and the provider kills the rest of the group.
		{"command that ignores SIGTERM", "trap '' TERM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			x := newTestExec(t, dir, Config{Start: writeScript(t, dir, "start", tc.trap+`
sleep 1000 &
echo $! > "$OUT/child.tmp" && mv "$OUT/child.tmp" "$OUT/child"
echo $$ > "$OUT/pid.tmp" && mv "$OUT/pid.tmp" "$OUT/pid"
wait
`)})
			x.waitDelay = 300 * time.Millisecond
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			t0 := time.Now()
			addr, err := x.Start(ctx, "engine-0")
			took := time.Since(t0)
			if err == nil {
				t.Fatalf("Start returned %q, want an error", addr)
			}
			if took > 10*time.Second {
				t.Errorf("Start took %v after a 200ms ctx", took)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
			}
			if !strings.HasPrefix(err.Error(), "exec provider: start engine-0: ") {
				t.Errorf("error %q does not name the command and engine", err)
			}
			waitGone(t, "the start script", readPid(t, filepath.Join(dir, "pid")))
			waitGone(t, "the start script's child", readPid(t, filepath.Join(dir, "child")))
		})
	}
}

func TestExecStop(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, stop, want string
	}{
		{"succeeds", `echo "$WAKEGATE_ENGINE" > "$OUT/stopped"`, ""},
		{"fails", `echo "machine is busy" >&2; exit 1`, "exec provider: stop engine-1: exit status 1: machine is busy"},
		{"not found", `no-such-cloud-cli machines stop`, "exit status 127 (command not found: check the stop command line and PATH)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			x := newTestExec(t, dir, Config{Stop: tc.stop})
			err := x.Stop(t.Context(), "engine-1")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := readFile(t, filepath.Join(dir, "stopped")); got != "engine-1\n" {
					t.Errorf("stop command saw WAKEGATE_ENGINE=%q, want engine-1", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Stop error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// Not parallel: it sets the process environment.
func TestExecStopAndStatusNeverSeeAToken(t *testing.T) {
	t.Setenv("WAKEGATE_TOKEN", "inherited-stale-token")
	dir := t.TempDir()
	x := newTestExec(t, dir, Config{
		Stop:   `echo "${WAKEGATE_TOKEN-unset}" > "$OUT/stop"`,
		Status: `echo "${WAKEGATE_TOKEN-unset}" > "$OUT/status"; echo running`,
	})
	if err := x.Stop(t.Context(), "engine-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Status(t.Context(), "engine-0"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"stop", "status"} {
		if got := readFile(t, filepath.Join(dir, f)); got != "unset\n" {
			t.Errorf("%s command saw WAKEGATE_TOKEN=%q, want it unset", f, got)
		}
	}
}

func TestExecStatusReportsTheTrimmedWord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, status, want, wantErr string
	}{
		{"running", `printf '  running \n\n'`, "running", ""},
		{"stopped", `echo stopped`, "stopped", ""},
		{"anything else as-is", `echo suspended`, "suspended", ""},
		{"sees its engine", `echo "$WAKEGATE_ENGINE"`, "engine-1", ""},
		{"nothing printed", `true`, "", "exec provider: status engine-1: status command printed nothing; it must print running or stopped"},
		{"fails", `echo "no credentials" >&2; exit 2`, "", "exec provider: status engine-1: exit status 2: no credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			x := newTestExec(t, t.TempDir(), Config{Status: tc.status})
			got, err := x.Status(t.Context(), "engine-1")
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Errorf("Status = %q, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Status = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestExecStatusWithoutACommandIsAnError(t *testing.T) {
	t.Parallel()
	x := newTestExec(t, t.TempDir(), Config{})
	got, err := x.Status(t.Context(), "engine-0")
	if err == nil || !strings.Contains(err.Error(), "no status command configured") {
		t.Errorf("Status = %q, %v; want a no-status-command error", got, err)
	}
}

func TestExecRefusesAnUnknownEngine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ran := `touch "$OUT/ran"`
	tokens := 0
	x := newTestExec(t, dir, Config{
		Start: ran, Stop: ran, Status: ran,
		Token: func(string) (string, error) { tokens++; return execTestToken, nil },
	})
	check := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), `exec provider: no engine "engine-9"`) {
			t.Errorf("%s: error = %v, want the unknown engine refused", what, err)
		}
	}
	_, err := x.Start(t.Context(), "engine-9")
	check("Start", err)
	check("Stop", x.Stop(t.Context(), "engine-9"))
	_, err = x.Status(t.Context(), "engine-9")
	check("Status", err)
	if _, err := os.Stat(filepath.Join(dir, "ran")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a command ran for an unknown engine (stat: %v)", err)
	}
	if tokens != 0 {
		t.Errorf("a token was minted for an unknown engine")
	}
}

func TestExecTokenErrorIsReturnedWithoutRunningStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	errCA := errors.New("CA unreachable")
	x := newTestExec(t, dir, Config{
		Start: `touch "$OUT/ran"; echo 127.0.0.1:1234`,
		Token: func(string) (string, error) { return "", errCA },
	})
	_, err := x.Start(t.Context(), "engine-0")
	if !errors.Is(err, errCA) {
		t.Fatalf("Start error = %v, want it to wrap the token error", err)
	}
	if !strings.HasPrefix(err.Error(), "exec provider: start engine-0: token: ") {
		t.Errorf("error %q does not say the token failed", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("start command ran without a token (stat: %v)", err)
	}
}

func TestExecEnginesListsTheConfiguredIDs(t *testing.T) {
	t.Parallel()
	x := newTestExec(t, t.TempDir(), Config{IDs: []string{"engine-0", "engine-1", "engine-2"}})
	ids, err := x.Engines(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ids, ",") != "engine-0,engine-1,engine-2" {
		t.Errorf("Engines = %q", ids)
	}
	ids[0] = "changed"
	if again, _ := x.Engines(t.Context()); again[0] != "engine-0" {
		t.Errorf("changing the returned list changed the pool: %q", again)
	}
}

func TestExecLogsOneLinePerCommandWithoutTheToken(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	x := newTestExec(t, t.TempDir(), Config{
		Start:  `echo "$WAKEGATE_TOKEN" >&2; echo 127.0.0.1:1234`,
		Stop:   `echo "$WAKEGATE_TOKEN" >&2; exit 4`,
		Status: `echo running`,
		Env:    []string{"WAKEGATE_CA_FINGERPRINT=abc123fingerprint"},
		Log:    slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if _, err := x.Start(t.Context(), "engine-0"); err != nil {
		t.Fatal(err)
	}
	if err := x.Stop(t.Context(), "engine-0"); err == nil {
		t.Fatal("Stop succeeded, want exit status 4")
	}
	if _, err := x.Status(t.Context(), "engine-0"); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 log lines, got %d:\n%s", len(lines), out)
	}
	for i, kind := range []string{"start", "stop", "status"} {
		for _, want := range []string{"engine=engine-0", "kind=" + kind, "duration_ms=", "exit_code="} {
			if !strings.Contains(lines[i], want) {
				t.Errorf("log line %q lacks %q", lines[i], want)
			}
		}
	}
	if !strings.Contains(lines[1], "exit_code=4") {
		t.Errorf("stop log line %q lacks exit_code=4", lines[1])
	}
	for _, secret := range []string{execTestToken, "abc123fingerprint", "PATH="} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds %q:\n%s", secret, out)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	tok := func(string) (string, error) { return execTestToken, nil }
	ok := Config{IDs: []string{"engine-0"}, Start: "true", Stop: "true", Token: tok}
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"no ids", func(c *Config) { c.IDs = nil }, "no engine ids"},
		{"empty id", func(c *Config) { c.IDs = []string{"engine-0", ""} }, "empty engine id"},
		{"duplicate id", func(c *Config) { c.IDs = []string{"engine-0", "engine-0"} }, "listed twice"},
		{"no start", func(c *Config) { c.Start = "" }, "need both a start and a stop command"},
		{"blank stop", func(c *Config) { c.Stop = "  " }, "need both a start and a stop command"},
		{"no token source", func(c *Config) { c.Token = nil }, "no token source"},
		{"env not KEY=value", func(c *Config) { c.Env = []string{"WAKEGATE_CA_URL"} }, "is not KEY=value"},
		{"env sets the token", func(c *Config) { c.Env = []string{"WAKEGATE_TOKEN=x"} }, "set by the provider"},
		{"env sets the name", func(c *Config) { c.Env = []string{"WAKEGATE_ENGINE_NAME=wakegate-engine-x"} }, "set by the provider"},
		{"valid", func(c *Config) {}, ""},
		{"valid without status", func(c *Config) { c.Status = "" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.change(&c)
			_, err := New(c)
			if tc.want == "" {
				if err != nil {
					t.Errorf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
