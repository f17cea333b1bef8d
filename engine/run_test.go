package engine

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"github.com/wakegate/wakegate/internal/testserve"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/internal/bktest"
	"github.com/wakegate/wakegate/proxy"
	"github.com/wakegate/wakegate/wire"
)

// engineHarness runs an Engine in-process on a real buildkitd, with a
// plain-TCP bridge that plays the gateway (mTLS with the gateway identity)
// so buildctl can build through the engine's front.
type engineHarness struct {
	t       *testing.T
	dir     string
	ca      *certs.CA
	srvCert *tls.Certificate
	gwCert  *tls.Certificate
	addr    string // the engine's mTLS address
	engine  *Engine
	done    chan struct{} // closed when Run has returned
	err     error         // what Run returned, set before done closes
	cancel  context.CancelFunc
}

func newHarness(t *testing.T, dir string) *engineHarness {
	t.Helper()
	ca, err := certs.Init(t.TempDir(), "engine-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(certs.Server, "wakegate-engine-0", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway's certificate as the gateway gets it: from the servers
	// provisioner, with the gateway role.
	a, err := ca.OpenAuthority(certs.AuthorityConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	gw, err := a.Issue(t.Context(), certs.Server, identity.GatewayName, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &engineHarness{t: t, dir: dir, ca: ca, srvCert: srv.TLSCertificate(), gwCert: gw.TLSCertificate()}
}

func (h *engineHarness) start(idle time.Duration) {
	h.t.Helper()
	h.run(Config{
		Backend:      Buildkitd{Bin: buildkitdBin(h.t), Dir: h.dir},
		Idle:         idle,
		DrainTimeout: time.Minute,
		StopTimeout:  30 * time.Second,
	})
}

// run starts an engine of cfg, with the harness's certificates, and waits
// until it is ready.
func (h *engineHarness) run(cfg Config) {
	h.t.Helper()
	h.launch(cfg)
	h.waitReady()
}

// launch starts an engine of cfg, with the harness's certificates, and
// does not wait for it; it is stopped when the test ends.
func (h *engineHarness) launch(cfg Config) {
	t := h.t
	t.Helper()
	cfg.TLS = certs.ServerTLS(func() *tls.Certificate { return h.srvCert }, h.ca.Pool())
	cfg.Allow = []string{identity.GatewayName}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.engine, h.addr, h.cancel, h.done = e, ln.Addr().String(), cancel, make(chan struct{})
	go func() {
		h.err = e.Run(ctx, ln)
		close(h.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(2 * time.Minute):
			t.Error("engine did not stop")
		}
	})
}

// client dials the engine's front as the gateway would.
func (h *engineHarness) dial(ctx context.Context, proto string, cert *tls.Certificate) (*tls.Conn, error) {
	cfg := certs.ClientTLS(func() *tls.Certificate { return cert }, h.ca.Pool(), "127.0.0.1")
	cfg.NextProtos = []string{proto}
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

func (h *engineHarness) status() (Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return h.dial(ctx, ProtoStatus, h.gwCert)
	}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://engine/status", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return Status{}, err
	}
	defer resp.Body.Close()
	var s Status
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

func (h *engineHarness) waitReady() {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if s, err := h.status(); err == nil && s.Ready {
			return
		}
		select {
		case <-h.done:
			h.t.Fatalf("engine exited before it was ready: %v", h.err)
		default:
		}
		if time.Now().After(deadline) {
			h.t.Fatal("engine never became ready")
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

// bridge is a plain TCP listener that carries each connection to the
// engine over mTLS as the gateway.
func (h *engineHarness) bridge() string {
	t := h.t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testserve.Serve(t, ln, func(c net.Conn) {
		if ec, err := h.dial(context.Background(), wire.ProtoProxy, h.gwCert); err == nil {
			proxy.Join(context.Background(), c, ec, "buildctl", "engine", 0)
		}
	})
	return "tcp://" + ln.Addr().String()
}

func buildctlBin(t *testing.T) string { return bktest.Buildctl(t) }

// sleepContext is a build context whose RUN step sleeps for secs seconds
// (a long step with no traffic on the wire).
func sleepContext(t *testing.T, secs string) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "rootfs", "bin"), 0o755)
	bb, err := os.ReadFile(bktest.StaticBusybox(t))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "rootfs", "bin", "busybox"), bb, 0o755)
	df := "FROM scratch\nCOPY rootfs/ /\nRUN [\"/bin/busybox\", \"sleep\", \"" + secs + "\"]\n"
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644)
	return dir
}

func buildctl(ctx context.Context, t *testing.T, addr, dir string) *exec.Cmd {
	return exec.CommandContext(ctx, buildctlBin(t), "--addr", addr, "build", "--frontend", "dockerfile.v0",
		"--local", "context="+dir, "--local", "dockerfile="+dir, "--progress", "plain")
}

var runCachedRE = regexp.MustCompile(`(?m)^#\d+ CACHED$`)

func TestSIGTERMDuringBuildFinishesItAndKeepsTheCache(t *testing.T) {
	dir := shortDir(t)
	h := newHarness(t, dir)
	h.start(0)
	bctx := sleepContext(t, "3")
	cmd := buildctl(t.Context(), t, h.bridge(), bctx)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for { // until BuildKit reports the build running
		if s, err := h.status(); err == nil && s.Builds > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the build never showed as in progress")
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}

	h.cancel() // what SIGTERM does in 'wakegate engine'
	buildErr := cmd.Wait()
	if <-h.done; h.err != nil {
		t.Fatalf("engine stop: %v", h.err)
	}
	if buildErr != nil {
		t.Fatalf("the running build failed at shutdown instead of finishing: %v\n%s", buildErr, out)
	}
	if n := countBuildkitd(t, dir); n != 0 {
		t.Fatalf("%d buildkitd processes left after the engine stopped", n)
	}

	// A new engine on the same state serves the earlier cache.
	h2 := newHarness(t, dir)
	h2.start(0)
	out2, err := buildctl(t.Context(), t, h2.bridge(), bctx).CombinedOutput()
	if err != nil {
		t.Fatalf("build after restart: %v\n%s", err, out2)
	}
	if !runCachedRE.Match(out2) || strings.Count(string(out2), "CACHED") < 2 {
		t.Fatalf("build after restart is not CACHED:\n%s", out2)
	}
}

func TestCorruptCacheDatabaseIsSetAsideAndTheEngineStarts(t *testing.T) {
	dir := shortDir(t)
	h := newHarness(t, dir)
	h.start(0)
	h.cancel()
	if <-h.done; h.err != nil {
		t.Fatal(h.err)
	}
	db := filepath.Join(dir, "root", "cache.db")
	if _, err := os.Stat(db); err != nil {
		t.Fatalf("buildkitd wrote no cache.db: %v", err)
	}
	if err := os.WriteFile(db, []byte(strings.Repeat("not a bolt database ", 400)), 0o600); err != nil {
		t.Fatal(err)
	}

	h2 := newHarness(t, dir)
	h2.start(0) // fails the test unless the engine becomes ready
	aside, _ := filepath.Glob(filepath.Join(dir, "root.corrupt-*"))
	if len(aside) != 1 {
		t.Fatalf("corrupt cache not set aside: %v", aside)
	}
	if _, err := os.Stat(filepath.Join(aside[0], "cache.db")); err != nil {
		t.Fatalf("the set-aside cache lost its database: %v", err)
	}
}

func TestIdleSelfExitWaitsForALongSilentBuild(t *testing.T) {
	dir := shortDir(t)
	h := newHarness(t, dir)
	idle := 500 * time.Millisecond
	h.start(idle)
	// The first build runs a 3-second RUN step: far longer than the idle
	// bound, and silent on the wire.
	cmd := buildctl(t.Context(), t, h.bridge(), sleepContext(t, "3"))
	began := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the engine stopped during a build: %v\n%s", err, out)
	}
	built := time.Now()
	if took := built.Sub(began); took < 3*time.Second {
		t.Fatalf("the build took %s, shorter than its RUN step", took)
	}
	select {
	case <-h.done:
		if h.err != nil {
			t.Fatalf("idle exit: %v", h.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the engine did not exit after being idle")
	}
	if after := time.Since(built); after < idle {
		t.Fatalf("the engine exited %s after the build, before the %s idle bound", after, idle)
	}
}

func TestEngineAdmitsOnlyTheGateway(t *testing.T) {
	h := newHarness(t, shortDir(t))
	h.start(0)
	// A CI job, and another engine: neither holds the gateway role. (A
	// client certificate that took the gateway's name, which the CA no
	// longer issues, is TestEngineAdmitsOnlyAGatewayCertificateNotAName's.)
	for _, c := range []struct {
		kind certs.Kind
		name string
	}{{certs.Client, "ci-job"}, {certs.Server, identity.EngineName("1")}} {
		name := c.name
		other, err := h.ca.Issue(c.kind, name, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := h.dial(t.Context(), wire.ProtoProxy, other.TLSCertificate())
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil || errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "remote error") {
			t.Fatalf("client certificate %q = %v, want a TLS refusal", name, err)
		}
	}
}

func TestGeneratedConfigBoundsGCByTheVolume(t *testing.T) {
	dir := t.TempDir()
	p, err := writeConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	maxUsed, minFree, reserved, _ := gcBounds(dir)
	for _, want := range []string{"[worker.oci]", "gc = true",
		`maxUsedSpace = "` + itoa(maxUsed) + `"`, `minFreeSpace = "` + itoa(minFree) + `"`, `reservedSpace = "` + itoa(reserved) + `"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("buildkitd.toml lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "keepBytes") || strings.Contains(string(b), "keepDuration") {
		t.Errorf("buildkitd.toml uses a deprecated or pinning field:\n%s", b)
	}
	if maxUsed == 0 || minFree == 0 || maxUsed+minFree > maxUsed/8*10 {
		t.Errorf("bounds %d used, %d free do not fit the volume", maxUsed, minFree)
	}
}

func itoa(n uint64) string { return strings.TrimSpace(strings.Replace(jsonNum(n), "\n", "", -1)) }

func jsonNum(n uint64) string { b, _ := json.Marshal(n); return string(b) }

func countBuildkitd(_ *testing.T, dir string) int { return bktest.CountBuildkitd(dir) }
