package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/wakegate/wakegate/fly/flytest"
)

// fromZeroStep is one thing docs/fly.md's "From zero" says to run, in its
// order: a wakegate command line, or "fly deploy" (the gateway of
// fly.toml).
type fromZeroStep struct {
	deploy bool
	args   []string // after "wakegate"
	env    []string // NAME=VALUE before it on its line
}

// fromZeroSteps reads docs/fly.md's "From zero" section in order, with
// shell line continuations joined: every 'wakegate ...' command (in code,
// or inside 'fly ssh console -C "..."') and every `fly deploy`.
func fromZeroSteps(t *testing.T) []fromZeroStep {
	t.Helper()
	b, err := os.ReadFile("../../docs/fly.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "## From zero")
	if start < 0 {
		t.Fatal("docs/fly.md has no From zero section")
	}
	section := doc[start+len("## From zero"):]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	section = regexp.MustCompile(`\\\n\s*`).ReplaceAllString(section, " ")
	re := regexp.MustCompile("`fly deploy`|((?:[A-Z_]+=\\S+ )*)wakegate ((?:fly|certs|connect|gateway|status) [^\"`\\n]*)")
	var steps []fromZeroStep
	for _, m := range re.FindAllStringSubmatch(section, -1) {
		if m[0] == "`fly deploy`" {
			steps = append(steps, fromZeroStep{deploy: true})
			continue
		}
		steps = append(steps, fromZeroStep{env: strings.Fields(m[1]), args: strings.Fields(m[2])})
	}
	return steps
}

// flyTomlGateway is the gateway command of fly.toml's gateway process.
func flyTomlGateway(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../fly.toml")
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Processes map[string]string `toml:"processes"`
	}
	if err := toml.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	return strings.Fields(strings.ReplaceAll(conf.Processes["gateway"], "\\\n", " "))
}

// TestFlyFromZeroAsWritten follows docs/fly.md's "From zero" against the
// Fly emulator, in the order written, with real BuildKit: 'fly init' and
// 'fly status' on an empty app, the gateway as fly.toml runs it (at
// 'fly deploy') on an empty CA volume, the root fingerprint, a CI job's
// token, and 'connect' with it running a build. Only what cannot be
// emulated is replaced: the volume's path, public addresses, and the
// build command.
func TestFlyFromZeroAsWritten(t *testing.T) {
	requireRoot(t)
	buildkitd, buildctl := tool(t, "WAKEGATE_BUILDKITD", "buildkitd"), tool(t, "WAKEGATE_BUILDCTL", "buildctl")
	bctx := buildContext(t, staticBusybox(t))
	t.Setenv("WAKEGATE_BUILDKITD", buildkitd)
	t.Setenv("WAKEGATE_CA_PASSWORD", "the-fly-secret") // step 1's 'fly secrets set'
	vols, err := os.MkdirTemp("", "wg-fly-zero-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(vols) })
	em := flytest.New(flytest.Options{Dir: vols, Runner: &flytest.EngineRunner{Bin: os.Getenv("WAKEGATE_BIN")}})
	api := httptest.NewServer(em)
	t.Cleanup(func() { api.Close(); em.Close() })
	t.Setenv("FLY_FLAPS_BASE_URL", api.URL)
	t.Setenv("FLY_API_TOKEN", "emulator-token")

	volume := filepath.Join(t.TempDir(), "data") // the gateway's volume, empty
	if err := os.MkdirAll(volume, 0o755); err != nil {
		t.Fatal(err)
	}
	var gw *logWatch
	var gwAddr, caAddr, fp, token string
	var did []string
	for _, s := range fromZeroSteps(t) {
		if s.deploy && gw != nil {
			continue // the section names 'fly deploy' again, in prose: deployed already
		}
		if s.deploy {
			args := append(flyTomlGateway(t), "--listen", "127.0.0.1:0", "--ca-listen", "127.0.0.1:0", "--admin", "", "--engine-ca-url", "")
			for i, a := range args {
				args[i] = strings.ReplaceAll(a, "/data", volume)
			}
			gw = background(t, args...)
			m, _ := gw.waitFor(t, listeningRE, 0, 30*time.Second)
			gwAddr = m[1]
			m, _ = gw.waitFor(t, caListeningRE, 0, time.Second)
			caAddr = m[1]
			did = append(did, "fly deploy")
			continue
		}
		cmd := s.args[0]
		if cmd == "fly" || cmd == "certs" {
			cmd += " " + s.args[1]
		}
		args := make([]string, len(s.args))
		for i, a := range s.args {
			a = strings.ReplaceAll(a, "/data", volume)
			a = strings.ReplaceAll(a, "my-wakegate.fly.dev:8443", gwAddr)
			a = strings.ReplaceAll(a, "https://my-wakegate.fly.dev:9443", "https://"+caAddr)
			if a == "FP" {
				a = fp
			}
			args[i] = a
		}
		switch cmd {
		case "fly init", "fly status":
			out := mustRun(t, args...)
			t.Logf("wakegate %s:\n%s", cmd, out)
		case "certs fingerprint":
			if gw == nil {
				t.Fatalf("the docs ask for the fingerprint before the gateway (which makes the CA) is deployed")
			}
			fp = strings.TrimSpace(mustRun(t, args...))
			if !strings.Contains(gw.String(), "root_fingerprint="+fp) {
				t.Errorf("the gateway's log does not give the fingerprint %s:\n%s", fp, gw)
			}
		case "certs token":
			token = strings.TrimSpace(mustRun(t, args...))
		case "connect":
			if token == "" || fp == "" || gwAddr == "" {
				t.Fatalf("the docs run connect before the token (%t), the fingerprint (%t) or the gateway (%t)", token != "", fp != "", gwAddr != "")
			}
			for _, e := range s.env {
				if e == "WAKEGATE_TOKEN=…" {
					t.Setenv("WAKEGATE_TOKEN", token)
				}
			}
			dash := len(args)
			for i, a := range args {
				if a == "--" {
					dash = i
					break
				}
			}
			// The build command: buildctl on a context that needs no registry.
			args = append(append(args[:dash:dash], "--listen", "127.0.0.1:0", "--", buildctl), buildctlArgs(bctx)...)
			out := newLogWatch()
			if err := run(t.Context(), args, out, out); err != nil {
				t.Fatalf("wakegate %s: %v\n%s\ngateway log:\n%s", strings.Join(args, " "), err, out, gw)
			}
		default:
			t.Fatalf("From zero runs 'wakegate %s', which this test does not know how to follow", strings.Join(s.args, " "))
		}
		did = append(did, cmd)
	}
	want := []string{"fly init", "fly status", "fly deploy", "certs fingerprint", "certs token", "connect"}
	if strings.Join(did, ", ") != strings.Join(want, ", ") {
		t.Fatalf("From zero's steps, in order: %q; want %q", did, want)
	}
}
