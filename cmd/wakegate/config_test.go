package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/gateway"
)

var update = flag.Bool("update", false, "rewrite generated files (docs/configuration.md)")

// gatewayFlagSet is the gateway's flag set after parsing args, as
// runGateway has it before it applies the configuration.
func gatewayFlagSet(t *testing.T, args ...string) (*flag.FlagSet, *gatewayFlags) {
	t.Helper()
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var g gatewayFlags
	g.define(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs, &g
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "wakegate.toml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func noEnv(string) string { return "" }

func TestConfigFileSetsEveryKindOfValue(t *testing.T) {
	hook := filepath.Join(t.TempDir(), "hook")
	if err := os.WriteFile(hook, []byte("s3cret-for-the-test"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := writeConfig(t, strings.ReplaceAll(`# every kind of key the gateway has
ca-dir = "/srv/ca"
state = '/srv/state'
listen = "0.0.0.0:8443"
admin = ""
engines = 4
hard-limit = 6
soft-limit = "auto"
idle = "5m"
wake-timeout = "90s"
fly-suspend = true
log-format = "json"
github-webhook-secret-file = "HOOK"
policy = "/etc/wakegate/policy.toml"
`, "HOOK", hook))
	fs, g := gatewayFlagSet(t)
	if err := applyConfig(fs, file, noEnv); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"ca-dir", g.ca.dir, "/srv/ca"},
		{"state", g.host.local.state, "/srv/state"},
		{"listen", g.front.listen, "0.0.0.0:8443"},
		{"admin", g.front.admin, ""},
		{"engines", g.pool.engines, 4},
		{"hard-limit", g.pool.hardLimit, 6},
		{"soft-limit", g.pool.softLimit, gateway.SoftBySize},
		{"idle", g.pool.idle, 5 * time.Minute},
		{"wake-timeout", g.pool.wakeTimeout, 90 * time.Second},
		{"fly-suspend", g.host.fly.suspend, true},
		{"log-format", g.logFormat, "json"},
		{"github-webhook-secret-file", g.webhook.secretFile, hook},
		{"policy", g.access.policyFile, "/etc/wakegate/policy.toml"},
		{"prefer (not in the file)", g.pool.prefer, "home"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if err := g.validate(); err != nil {
		t.Errorf("the configured gateway does not validate: %v", err)
	}

	// An integer soft limit is the flag's other form.
	fs, g = gatewayFlagSet(t)
	if err := applyConfig(fs, writeConfig(t, "soft-limit = 2\n"), noEnv); err != nil || g.pool.softLimit != 2 {
		t.Errorf("soft-limit = 2: %d, %v", g.pool.softLimit, err)
	}
}

func TestConfigPrecedenceFileThenEnvThenFlag(t *testing.T) {
	file := writeConfig(t, "idle = \"1m\"\nengines = 2\nprefer = \"warm\"\n")
	env := map[string]string{"WAKEGATE_IDLE": "2m", "WAKEGATE_ENGINES": "3"}
	getenv := func(k string) string { return env[k] }

	fs, g := gatewayFlagSet(t, "--idle", "3m")
	if err := applyConfig(fs, file, getenv); err != nil {
		t.Fatal(err)
	}
	if g.pool.idle != 3*time.Minute {
		t.Errorf("idle = %v: the command line should win over env and file", g.pool.idle)
	}
	if g.pool.engines != 3 {
		t.Errorf("engines = %d: the environment should win over the file", g.pool.engines)
	}
	if g.pool.prefer != "warm" {
		t.Errorf("prefer = %q: the file should win over the default", g.pool.prefer)
	}

	// Without a file the environment still applies.
	fs, g = gatewayFlagSet(t)
	if err := applyConfig(fs, "", getenv); err != nil || g.pool.idle != 2*time.Minute {
		t.Errorf("env alone: idle = %v, %v", g.pool.idle, err)
	}

	// A bad variable names itself and the flag.
	fs, _ = gatewayFlagSet(t)
	err := applyConfig(fs, "", func(k string) string { return map[string]string{"WAKEGATE_IDLE": "soon"}[k] })
	if err == nil || !strings.Contains(err.Error(), `$WAKEGATE_IDLE: invalid value "soon" for --idle`) {
		t.Errorf("bad WAKEGATE_IDLE = %v", err)
	}

	// WAKEGATE_ENGINE names an engine to exec commands: it is not --engine.
	fs, g = gatewayFlagSet(t)
	if err := applyConfig(fs, "", func(k string) string { return map[string]string{"WAKEGATE_ENGINE": "engine-0"}[k] }); err != nil || g.host.local.engineKind != "buildkit" {
		t.Errorf("WAKEGATE_ENGINE set --engine: %q, %v", g.host.local.engineKind, err)
	}
}

func TestConfigProblemsNameTheirLine(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string // problems, in order, after "FILE:"
	}{
		{"unknown key", "ca-dir = \"ca\"\n\nidel = \"5m\"\n", []string{"3: idel: unknown key"}},
		{"wrong type", "ca-dir = \"ca\"\nengines = \"4\"\n", []string{"2: engines: want an integer, not a string"}},
		{"duration as integer", "idle = 30\n", []string{`1: idle: want a duration string such as "30s", not an integer`}},
		{"bad duration", "# comment\nidle = \"5x\"\n", []string{`2: idle: invalid value "5x": time: unknown unit "x" in duration "5x" (e.g. idle = "30s")`}},
		{"value the flag refuses", "soft-limit = \"lots\"\n", []string{`1: soft-limit: invalid value "lots": want a number of sessions`}},
		{"table", "ca-dir = \"ca\"\n[fly]\napp = \"x\"\n", []string{"2: fly: tables are not used"}},
		{"dotted key", "fly.app = \"x\"\n", []string{"1: fly.app: dotted keys are not used"}},
		{"the config flag itself", "config = \"other.toml\"\n", []string{"1: config: unknown key"}},
		{"not TOML", "ca-dir = \"ca\"\nidle =\n", []string{"2: not valid TOML"}},
		{"every problem at once", "nope = 1\nengines = true\nidle = \"x\"\n", []string{"1: nope: unknown key", "2: engines: want an integer, not a boolean", `3: idle: invalid value "x"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, _ := gatewayFlagSet(t)
			err := applyConfigFile(fs, "w.toml", []byte(tc.text), func(string) bool { return true })
			var ps *configProblems
			if !errors.As(err, &ps) {
				t.Fatalf("err = %v, want problems", err)
			}
			lines := strings.Split(ps.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("problems:\n%s\nwant %d", ps.Error(), len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], "w.toml:"+w) {
					t.Errorf("problem %d = %q, want it to start %q", i, lines[i], "w.toml:"+w)
				}
			}
		})
	}
}

func TestConfigKeyOverriddenByFlagIsStillChecked(t *testing.T) {
	file := writeConfig(t, "idle = \"5x\"\n")
	fs, g := gatewayFlagSet(t, "--idle", "1m")
	err := applyConfig(fs, file, noEnv)
	if err == nil || !strings.Contains(err.Error(), `:1: idle: invalid value "5x"`) {
		t.Errorf("err = %v, want the file's bad idle reported", err)
	}
	if g.pool.idle != time.Minute {
		t.Errorf("idle = %v, want the flag's 1m kept", g.pool.idle)
	}
}

func TestGatewayRefusesABadConfigFile(t *testing.T) {
	file := writeConfig(t, "ca-dir = \"ca\"\nstate = \"s\"\nidle = \"soon\"\n")
	err := run(t.Context(), []string{"gateway", "--config", file}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), file+`:3: idle: invalid value "soon"`) {
		t.Errorf("gateway --config = %v", err)
	}
	// The file's values reach validation: with ca-dir and state from the
	// file, the first complaint is the engine count.
	file = writeConfig(t, "ca-dir = \"ca\"\nstate = \"s\"\nengines = 0\n")
	err = run(t.Context(), []string{"gateway", "--config", file}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--engines must be at least 1") {
		t.Errorf("gateway --config with engines = 0: %v", err)
	}
}

func TestConfigCheck(t *testing.T) {
	good := writeConfig(t, "ca-dir = \"ca\"\nidle = \"5m\"\nfly-suspend = true\n")
	var out bytes.Buffer
	if err := run(t.Context(), []string{"config", "check", good}, &out, &out); err != nil {
		t.Fatalf("config check good: %v\n%s", err, &out)
	}
	if out.String() != good+": ok\n" {
		t.Errorf("config check good printed %q", &out)
	}

	bad := writeConfig(t, "nope = 1\nidle = \"5x\"\n")
	out.Reset()
	err := run(t.Context(), []string{"config", "check", bad}, &out, &out)
	if err == nil || errors.Is(err, errUsage) || err.Error() != bad+": 2 problems" {
		t.Errorf("config check bad = %v", err)
	}
	want := bad + ":1: nope: unknown key"
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], want) || !strings.HasPrefix(lines[1], bad+":2: idle: ") {
		t.Errorf("config check bad printed:\n%s", &out)
	}

	if err := run(t.Context(), []string{"config", "check"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "want one FILE") {
		t.Errorf("config check without FILE = %v", err)
	}
	if err := run(t.Context(), []string{"config", "check", filepath.Join(t.TempDir(), "none.toml")}, io.Discard, io.Discard); err == nil {
		t.Error("config check of a missing file succeeded")
	}
}

// TestNoConfigKeyHoldsASecret: secrets are read from files a key names,
// never written in the configuration file itself.
func TestNoConfigKeyHoldsASecret(t *testing.T) {
	fs, _ := gatewayFlagSet(t)
	for _, f := range configKeys(fs) {
		for _, word := range []string{"password", "secret", "token", "key"} {
			if strings.Contains(f.Name, word) && !strings.HasSuffix(f.Name, "-file") {
				t.Errorf("key %q looks like it holds a secret; take a file instead", f.Name)
			}
		}
	}
}

func TestConfigurationDocIsCurrent(t *testing.T) {
	const file = "../../docs/configuration.md"
	want := configDoc()
	if *update {
		if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("docs/configuration.md is not what the gateway's flags say; run: go test ./cmd/wakegate -run TestConfigurationDocIsCurrent -update")
	}
	fs, _ := gatewayFlagSet(t)
	for _, f := range configKeys(fs) {
		if !strings.Contains(want, "| `"+f.Name+"` |") {
			t.Errorf("key %s is not in the page", f.Name)
		}
	}
}

func TestBadFlagIsOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"gateway", "--idle", "5x"}, `wakegate gateway: invalid value "5x" for --idle: time: unknown unit "x" in duration "5x" (e.g. --idle 30s); see 'wakegate help gateway'`},
		{[]string{"gateway", "--engines", "many"}, `wakegate gateway: invalid value "many" for --engines: not a whole number (e.g. --engines 1); see 'wakegate help gateway'`},
		{[]string{"gateway", "--frobnicate"}, `wakegate gateway: unknown flag --frobnicate; see 'wakegate help gateway'`},
		{[]string{"engine", "--drain-timeout", "long"}, `wakegate engine: invalid value "long" for --drain-timeout: time: invalid duration "long" (e.g. --drain-timeout 10m0s); see 'wakegate help engine'`},
		{[]string{"engine", "--idle"}, `wakegate engine: flag --idle needs a value (e.g. --idle 30s); see 'wakegate help engine'`},
		{[]string{"connect", "--wait-timeout", "3q"}, `wakegate connect: invalid value "3q" for --wait-timeout: time: unknown unit "q" in duration "3q" (e.g. --wait-timeout 10m0s); see 'wakegate help connect'`},
		{[]string{"connect", "--nope"}, `wakegate connect: unknown flag --nope; see 'wakegate help connect'`},
		{[]string{"certs", "issue", "--cert-ttl", "1y"}, `wakegate certs issue: invalid value "1y" for --cert-ttl: time: unknown unit "y" in duration "1y" (e.g. --cert-ttl 1h0m0s); see 'wakegate help certs'`},
		{[]string{"certs", "issue", "--ttl", "1y"}, `wakegate certs issue: invalid value "1y" for --ttl: time: unknown unit "y" in duration "1y" (e.g. --ttl 1h0m0s); see 'wakegate help certs'`},
	} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), tc.args, &stdout, &stderr)
		if !errors.Is(err, errUsage) {
			t.Errorf("wakegate %s = %v, want errUsage", strings.Join(tc.args, " "), err)
		}
		if got := stderr.String(); got != tc.want+"\n" {
			t.Errorf("wakegate %s printed:\n%s\nwant the one line:\n%s", strings.Join(tc.args, " "), got, tc.want)
		}
		if stdout.Len() != 0 {
			t.Errorf("wakegate %s printed to stdout: %s", strings.Join(tc.args, " "), &stdout)
		}
	}
}

func TestJSONLogsAreJSONLines(t *testing.T) {
	var buf bytes.Buffer
	log, err := newFormatLogger(&buf, "debug", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("engine woken", "engine", "engine-0", "wake_ms", 812)
	log.Debug("probe", "engine", "engine-1")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got:\n%s", &buf)
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		if rec["msg"] == nil || rec["engine"] == nil || rec["level"] == nil {
			t.Errorf("line %q lacks msg, level or engine", l)
		}
	}
	buf.Reset()
	log, _ = newFormatLogger(&buf, "info", "text")
	log.Info("engine woken", "engine", "engine-0")
	if !strings.Contains(buf.String(), "engine=engine-0") {
		t.Errorf("text log = %q", &buf)
	}
	if _, err := newFormatLogger(&buf, "info", "xml"); err == nil {
		t.Error("log format xml accepted")
	}
}
