package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/wakegate/wakegate/certs/oidctest"
)

// actionRun is one run of the GitHub Action's script (scripts/github-action.sh)
// as GitHub would run it: inputs as INPUT_* variables, the runner's files
// ($GITHUB_ENV, $GITHUB_OUTPUT, $GITHUB_STATE) in a temp dir, the job's
// token endpoint in the environment.
type actionRun struct {
	dir, ghEnv, ghOutput, ghState string
	env                           []string
}

func newActionRun(t *testing.T, job *oidctest.Job, inputs map[string]string) *actionRun {
	t.Helper()
	dir := t.TempDir()
	a := &actionRun{dir: dir, ghEnv: filepath.Join(dir, "github_env"), ghOutput: filepath.Join(dir, "github_output"), ghState: filepath.Join(dir, "github_state")}
	for _, f := range []string{a.ghEnv, a.ghOutput, a.ghState} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// version: path runs the wakegate binary this test run built.
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(os.Getenv("WAKEGATE_BIN"), filepath.Join(bin, "wakegate")); err != nil {
		t.Fatal(err)
	}
	a.env = append(os.Environ(), job.Env()...)
	a.env = append(a.env, "PATH="+bin+":"+os.Getenv("PATH"), "RUNNER_TEMP="+dir, "GITHUB_RUN_ID=4242", "GITHUB_JOB=build",
		"GITHUB_ENV="+a.ghEnv, "GITHUB_OUTPUT="+a.ghOutput, "GITHUB_STATE="+a.ghState, "INPUT_VERSION=path")
	for k, v := range inputs {
		a.env = append(a.env, "INPUT_"+strings.ToUpper(k)+"="+v)
	}
	return a
}

func (a *actionRun) script(t *testing.T, step string, extraEnv ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "bash", filepath.Join("..", "..", "scripts", "github-action.sh"), step)
	cmd.Env = append(append([]string{}, a.env...), extraEnv...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// vars reads NAME=VALUE lines of a runner file.
func vars(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndex(s, ") ")
	return i >= 0 && !strings.HasPrefix(s[i+2:], "Z")
}

// TestGitHubActionScriptExportsTheSidecarAndItsPostStepStopsIt runs the
// action's start step against a real gateway and the emulated GitHub token
// endpoint: what it exports to $GITHUB_ENV is what a real buildctl uses for
// a real build; the post step stops the sidecar.
func TestGitHubActionScriptExportsTheSidecarAndItsPostStepStopsIt(t *testing.T) {
	g, iss, _ := startOIDCGateway(t)
	buildctl := tool(t, "WAKEGATE_BUILDCTL", "buildctl")
	bctx := buildContext(t, staticBusybox(t))
	job := iss.JobEndpoint(t, oidctest.GitHubClaims("acme/app"))
	a := newActionRun(t, job, map[string]string{"gateway": g.addr, "ca-url": g.caURL, "ca-fingerprint": g.fp})

	out, err := a.script(t, "start")
	if err != nil {
		t.Fatalf("start step: %v\n%s\ngateway log:\n%s", err, out, g.logs)
	}
	env := vars(t, a.ghEnv)
	host := env["BUILDKIT_HOST"]
	if !regexp.MustCompile(`^tcp://127\.0\.0\.1:\d+$`).MatchString(host) || env["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] != host {
		t.Fatalf("$GITHUB_ENV = %v, want BUILDKIT_HOST and _EXPERIMENTAL_DAGGER_RUNNER_HOST on a loopback port", env)
	}
	if o := vars(t, a.ghOutput); o["address"] != host {
		t.Errorf("$GITHUB_OUTPUT address = %q, want %q", o["address"], host)
	}
	for _, want := range []string{"wakegate: engine engine-0 ready after", "serving " + host} {
		if !strings.Contains(out, want) {
			t.Errorf("the start step's log does not show %q:\n%s", want, out)
		}
	}
	state := vars(t, a.ghState)
	pidFile := filepath.Join(state["dir"], "connect.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if !alive(pid) {
		t.Fatalf("sidecar pid %d from %s is not running", pid, pidFile)
	}
	t.Cleanup(func() { syscallKill(pid) })

	// A later step: buildctl reads BUILDKIT_HOST from its environment.
	build := exec.CommandContext(t.Context(), buildctl, buildctlArgs(bctx)...)
	build.Env = append(os.Environ(), "BUILDKIT_HOST="+host)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("buildctl with the exported BUILDKIT_HOST: %v\n%s\ngateway log:\n%s", err, b, g.logs)
	}
	if job.Requests() != 1 {
		t.Errorf("the job's token endpoint was asked %d times, want 1 (one enrolment per job)", job.Requests())
	}

	out, err = a.script(t, "stop", "STATE_dir="+state["dir"], "STATE_builder="+state["builder"])
	if err != nil {
		t.Fatalf("post step: %v\n%s", err, out)
	}
	if alive(pid) {
		t.Fatalf("the sidecar (pid %d) still runs after the post step:\n%s", pid, out)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left after the post step: %v", err)
	}
	log, _ := os.ReadFile(filepath.Join(state["dir"], "connect.log"))
	if !strings.Contains(string(log), "connect listening") {
		t.Errorf("the sidecar's log does not show it serving:\n%s", log)
	}
}

// TestGitHubActionScriptSaysWhatIsMissing: each mistake a workflow author
// makes gets its own message, as a GitHub error annotation.
func TestGitHubActionScriptSaysWhatIsMissing(t *testing.T) {
	iss := oidctest.NewIssuer(t)
	job := iss.JobEndpoint(t, oidctest.GitHubClaims("acme/app"))
	full := map[string]string{"gateway": "127.0.0.1:1", "ca-url": "https://127.0.0.1:1", "ca-fingerprint": "ab"}
	for _, tc := range []struct {
		drop, set, want string
		env             []string
	}{
		{drop: "gateway", want: "input 'gateway' is required"},
		{drop: "ca-url", want: "input 'ca-url' is required"},
		{drop: "ca-fingerprint", want: "input 'ca-fingerprint' is required"},
		{set: "buildx=yes", want: "input 'buildx' must be true or false"},
		{set: "version=latest", want: "version 'latest': use a release tag"},
		{env: []string{"ACTIONS_ID_TOKEN_REQUEST_URL="}, want: "give it 'permissions: id-token: write'"},
	} {
		in := map[string]string{}
		for k, v := range full {
			if k != tc.drop {
				in[k] = v
			}
		}
		if k, v, ok := strings.Cut(tc.set, "="); ok {
			in[k] = v
		}
		a := newActionRun(t, job, in)
		out, err := a.script(t, "start", tc.env...)
		if err == nil || !strings.Contains(out, "::error title=wakegate::") || !strings.Contains(out, tc.want) {
			t.Errorf("start with %s%s%v = %v, want an error annotation saying %q:\n%s", tc.drop, tc.set, tc.env, err, tc.want, out)
		}
	}
}

func syscallKill(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		p.Kill()
	}
}

// TestGitHubActionBuildxBuilderOnTheSidecar: with 'buildx: true' the start
// step creates a builder with buildx's remote driver on the sidecar (buildx
// ignores BUILDKIT_HOST), a real buildx (built from the module proxy, no
// Docker engine) builds through it, and the post step removes it.
func TestGitHubActionBuildxBuilderOnTheSidecar(t *testing.T) {
	g, iss, _ := startOIDCGateway(t)
	buildx := tool(t, "WAKEGATE_BUILDX", "buildx")
	bctx := buildContext(t, staticBusybox(t))
	job := iss.JobEndpoint(t, oidctest.GitHubClaims("acme/app"))
	a := newActionRun(t, job, map[string]string{"gateway": g.addr, "ca-url": g.caURL, "ca-fingerprint": g.fp, "buildx": "true"})
	// buildx's state stays in the test: no ~/.docker.
	state := t.TempDir()
	bxEnv := []string{"BUILDX_CONFIG=" + filepath.Join(state, "buildx"), "DOCKER_CONFIG=" + filepath.Join(state, "docker"), "WAKEGATE_DOCKER_BUILDX=" + buildx}
	a.env = append(a.env, bxEnv...)

	out, err := a.script(t, "start")
	if err != nil {
		t.Fatalf("start step: %v\n%s\ngateway log:\n%s", err, out, g.logs)
	}
	st := vars(t, a.ghState)
	builder := st["builder"]
	if !strings.HasPrefix(builder, "wakegate-4242-") || vars(t, a.ghOutput)["builder"] != builder {
		t.Fatalf("builder %q in $GITHUB_STATE, outputs %v", builder, vars(t, a.ghOutput))
	}
	b, _ := os.ReadFile(filepath.Join(st["dir"], "connect.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	t.Cleanup(func() { syscallKill(pid) })

	buildxRun := func(args ...string) (string, error) {
		cmd := exec.CommandContext(t.Context(), buildx, args...)
		cmd.Env = append(os.Environ(), bxEnv...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// The builder is in use: a plain 'buildx build' goes through the sidecar.
	for i, wantCached := range []bool{false, true} {
		out, err := buildxRun("build", "--progress", "plain", "--output", "type=cacheonly", bctx)
		if err != nil {
			t.Fatalf("buildx build %d: %v\n%s\ngateway log:\n%s", i+1, err, out, g.logs)
		}
		if !strings.Contains(out, `using remote driver`) {
			t.Fatalf("buildx build %d did not use the remote builder:\n%s", i+1, out)
		}
		if got := runStepCached(t, out); got != wantCached {
			t.Fatalf("buildx build %d: RUN step cached = %v, want %v:\n%s", i+1, got, wantCached, out)
		}
	}

	out, err = a.script(t, "stop", "STATE_dir="+st["dir"], "STATE_builder="+builder)
	if err != nil {
		t.Fatalf("post step: %v\n%s", err, out)
	}
	if alive(pid) {
		t.Fatalf("the sidecar (pid %d) still runs after the post step", pid)
	}
	if ls, _ := buildxRun("ls"); strings.Contains(ls, builder) {
		t.Fatalf("builder %s still listed after the post step:\n%s", builder, ls)
	}
}

// TestActionJavaScriptRunsTheScriptAndPassesItsStatus: action.yml's main
// and post entry points (run by GitHub's node) only run the script's start
// and stop, and the step fails exactly when the script does.
func TestActionJavaScriptRunsTheScriptAndPassesItsStatus(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found (make deps installs Debian's nodejs): %v", err)
	}
	root := filepath.Join("..", "..")
	main := exec.CommandContext(t.Context(), node, filepath.Join(root, "action", "main.js"))
	main.Env = append(os.Environ(), "INPUT_GATEWAY=", "RUNNER_TEMP="+t.TempDir())
	out, err := main.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "::error title=wakegate::input 'gateway' is required") {
		t.Fatalf("main.js without inputs = %v, want exit 1 and the script's error annotation:\n%s", err, out)
	}
	post := exec.CommandContext(t.Context(), node, filepath.Join(root, "action", "post.js"))
	post.Env = append(os.Environ(), "STATE_dir=")
	if out, err := post.CombinedOutput(); err != nil || !strings.Contains(string(out), "nothing to stop") {
		t.Fatalf("post.js after a start that did not run = %v, want success:\n%s", err, out)
	}
}
