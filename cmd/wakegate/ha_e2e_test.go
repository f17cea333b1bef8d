package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/fly/flytest"
	"github.com/wakegate/wakegate/internal/pgtest"
)

// Two gateway processes (the real binary) on one PostgreSQL and one
// emulated Fly serve one pool: what docs/ha.md promises, tested as a
// deployment would run it.

// gwProc is a gateway process with fixed addresses, so that it can be
// restarted where its clients expect it.
type gwProc struct {
	name          string
	args          []string
	addr, caAddr  string
	logs          *logWatch
	cmd           *exec.Cmd
	exited        chan struct{}
	mu            sync.Mutex // guards waitErr
	waitErr       error
	startedBefore int // earlier runs of this gateway, for its log
}

// haGateway starts a gateway on caDir and the shared database dsn, with
// the provider's flags in extra.
func haGateway(t *testing.T, name, caDir, dsn string, extra ...string) *gwProc {
	t.Helper()
	g := &gwProc{name: name, addr: freePort(t), caAddr: freePort(t), logs: newLogWatch()}
	g.args = append([]string{"gateway", "--ca-dir", caDir, "--ca-db", dsn,
		"--listen", g.addr, "--admin", "", "--ca-listen", g.caAddr, "--wake-timeout", "90s"}, extra...)
	g.start(t)
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.exited
		if t.Failed() {
			t.Logf("gateway %s log:\n%s", g.name, g.logs)
		}
	})
	return g
}

func (g *gwProc) start(t *testing.T) {
	t.Helper()
	mark := g.logs.len()
	fmt.Fprintf(g.logs, "---- gateway %s run %d ----\n", g.name, g.startedBefore+1)
	g.startedBefore++
	g.cmd = exec.Command(os.Getenv("WAKEGATE_BIN"), g.args...)
	g.cmd.Env = append(os.Environ(), "WAKEGATE_CA_PASSWORD=")
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	g.cmd.WaitDelay = 5 * time.Second
	// A test binary that dies (a timeout's panic runs no cleanup) takes its
	// gateways with it.
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		err := cmd.Wait()
		g.mu.Lock()
		g.waitErr = err
		g.mu.Unlock()
		close(exited)
	}(g.cmd, g.exited)
	g.logs.waitFor(t, listeningRE, mark, 30*time.Second)
}

// term sends SIGTERM and waits for the gateway to exit.
func (g *gwProc) term(t *testing.T) {
	t.Helper()
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(90 * time.Second):
		t.Fatalf("gateway %s still running 90s after SIGTERM", g.name)
	}
}

// copyCA copies the CA directory, as an operator gives each gateway its
// own copy of the same CA.
func copyCA(t *testing.T, from string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "ca")
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("copy the CA: %v\n%s", err, out)
	}
	return to
}

// leafSerial is the serial of the certificate in a credentials directory.
func leafSerial(t *testing.T, creds string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(creds, "client.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no certificate in %s", creds)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

// haEnv is the emulated Fly with one engine, a database and two gateways.
type haEnv struct {
	*flyEnv
	dsn      string
	caA, caB string
	a, b     *gwProc
	machine  string
	fp       string
	bothLogs func() string
}

func newHAEnv(t *testing.T, gatewayArgs ...string) *haEnv {
	t.Helper()
	pg := pgtest.Start(t)
	env := &haEnv{flyEnv: newFlyEnv(t, flytest.Options{StartDelay: 300 * time.Millisecond, StopDelay: 50 * time.Millisecond,
		UpdateDelay: time.Second, FirstAddr: 100}, 0), dsn: pg.DSN("wakegate")}
	mustRun(t, "fly", "init", "--app", "ci-engines", "--region", "ams", "--engines", "1", "--volume-size", "1", "--image", "wakegate-engine", "--idle", "0")
	for _, id := range env.machineIDs() {
		env.machine = id
	}
	env.caA, env.caB = copyCA(t, env.caDir), copyCA(t, env.caDir)
	env.fp = strings.TrimSpace(mustRun(t, "certs", "fingerprint", "--dir", env.caDir))
	fly := append([]string{"--provider", "fly", "--fly-app", "ci-engines", "--fly-lease-ttl", "3s"}, gatewayArgs...)
	env.a = haGateway(t, "A", env.caA, env.dsn, fly...)
	env.b = haGateway(t, "B", env.caB, env.dsn, fly...)
	env.bothLogs = func() string { return "gateway A:\n" + env.a.logs.String() + "\ngateway B:\n" + env.b.logs.String() }
	return env
}

// buildVia runs a build through connect with the gateways given (one
// address or several) and returns its output or error.
func (env *haEnv) buildVia(t *testing.T, gateways string) (string, error) {
	t.Helper()
	return env.buildCtx(t.Context(), gateways)
}

func (env *haEnv) buildCtx(ctx context.Context, gateways string) (string, error) {
	out := newLogWatch()
	args := append([]string{"connect", "--gateway", gateways, "--creds", env.creds, "--listen", "127.0.0.1:0", "--", env.buildctl}, buildctlArgs(env.bctx)...)
	err := run(ctx, args, out, out)
	return out.String(), err
}

func (env *haEnv) waitState(t *testing.T, want string, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for env.em.State("ci-engines", env.machine) != want {
		if time.Now().After(deadline) {
			t.Fatalf("machine is %s after %s, want %s\n%s", env.em.State("ci-engines", env.machine), bound, want, env.bothLogs())
		}
		time.Sleep(50 * time.Millisecond) // polling, bounded by the deadline
	}
}

func TestTwoGatewaysOnOneDatabaseServeOneFlyPool(t *testing.T) {
	env := newHAEnv(t, "--idle", "2s")

	// Concurrent connects through both to the stopped engine start it once.
	starts := env.em.Calls("start")
	var wg sync.WaitGroup
	outs, errs := make([]string, 2), make([]error, 2)
	for i, g := range []*gwProc{env.a, env.b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = env.buildVia(t, g.addr)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("build %d through gateway %s: %v\n%s\n%s", i, []string{"A", "B"}[i], err, outs[i], env.bothLogs())
		}
	}
	if n := env.em.Calls("start") - starts; n != 1 {
		t.Errorf("two concurrent wakes through two gateways started the machine %d times, want once\n%s", n, env.bothLogs())
	}
	for _, g := range []*gwProc{env.a, env.b} {
		out, err := env.buildVia(t, g.addr)
		if err != nil || !runStepCached(t, out) {
			t.Fatalf("build through gateway %s is not CACHED (%v):\n%s", g.name, err, out)
		}
	}

	// A single-use token spent at one gateway is refused at the other.
	tok := strings.TrimSpace(mustRun(t, "certs", "token", "--dir", env.caA, "--name", "ci-job", "--ttl", "5m"))
	enrol := func(g *gwProc) (string, error) {
		out := newLogWatch()
		err := run(t.Context(), []string{"connect", "--gateway", g.addr, "--ca-url", "https://" + g.caAddr, "--ca-fingerprint", env.fp,
			"--token", tok, "--listen", "127.0.0.1:0", "--", "true"}, out, out)
		return out.String(), err
	}
	if out, err := enrol(env.a); err != nil {
		t.Fatalf("enrolment at A: %v\n%s", err, out)
	}
	if out, err := enrol(env.b); err == nil || !strings.Contains(err.Error(), "refused the token") {
		t.Fatalf("the token spent at A, used again at B: %v\n%s", err, out)
	}

	// Revoked through A (its CA API): B refuses the certificate at its next
	// handshake and, with --kill, closes its open connection.
	leaver := filepath.Join(t.TempDir(), "leaver")
	mustRun(t, "certs", "issue", "--dir", env.caA, "--name", "leaver", "--out", leaver)
	cert, roots, err := certs.LoadClientCreds(leaver)
	if err != nil {
		t.Fatal(err)
	}
	cfg := certs.ClientTLS(func() *tls.Certificate { return cert }, roots, "127.0.0.1")
	open, err := tls.Dial("tcp", env.b.addr, cfg)
	if err != nil {
		t.Fatalf("leaver's connection to B: %v", err)
	}
	defer open.Close()
	// An HTTP/2 client's first words, so that BuildKit's gRPC server keeps
	// the connection; its own SETTINGS back proves it reached the engine.
	open.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := open.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(open, make([]byte, 9)); err != nil {
		t.Fatalf("no answer from the engine through B: %v\n%s", err, env.b.logs)
	}
	closed := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, open)
		closed <- err
	}()
	select {
	case err := <-closed:
		t.Fatalf("the connection through B closed before any revocation: %v\n%s", err, env.b.logs)
	default:
	}
	mark := env.b.logs.len()
	revokedAt := time.Now()
	out := mustRun(t, "certs", "revoke", "--dir", env.caA, "--kill", leafSerial(t, leaver))
	t.Logf("%s", strings.TrimSpace(out))
	select {
	case <-closed:
		t.Logf("B closed the revoked certificate's connection %s after the revocation at A", time.Since(revokedAt).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatalf("B did not close the connection of a certificate revoked with --kill at A within 15s\n%s", env.bothLogs())
	}
	env.b.logs.waitFor(t, regexp.MustCompile(`revoked with --kill elsewhere`), mark, 5*time.Second)
	again, err := tls.Dial("tcp", env.b.addr, cfg)
	if err == nil {
		again.SetDeadline(time.Now().Add(10 * time.Second))
		again.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
		_, err = again.Read(make([]byte, 1))
		again.Close()
	}
	if err == nil {
		t.Fatalf("B let in a certificate revoked at A\n%s", env.b.logs)
	}
	// The client hears the alert before B writes its log line.
	env.b.logs.waitFor(t, regexp.MustCompile(`is revoked`), mark, 5*time.Second)

	// Gateway A is killed in the middle of a wake: B completes it.
	env.waitState(t, "stopped", 60*time.Second)
	updates := env.em.Calls("update")
	aBuild := make(chan error, 1)
	aCtx, stopA := context.WithCancel(t.Context())
	defer stopA()
	go func() {
		_, err := env.buildCtx(aCtx, env.a.addr)
		aBuild <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for env.em.Calls("update") == updates {
		if time.Now().After(deadline) {
			t.Fatalf("A did not begin waking the machine\n%s", env.bothLogs())
		}
		time.Sleep(10 * time.Millisecond) // polling, bounded by the deadline
	}
	env.a.cmd.Process.Kill()
	<-env.a.exited
	stopA() // its client would wait for A to come back
	t.Logf("killed A mid-wake, machine %s; A's build: %v", env.em.State("ci-engines", env.machine), <-aBuild)
	out, err = env.buildVia(t, env.b.addr)
	if err != nil {
		t.Fatalf("build through B after A died mid-wake: %v\n%s\n%s", err, out, env.bothLogs())
	}
	if !runStepCached(t, out) {
		t.Errorf("build through B after A died mid-wake is not CACHED:\n%s", out)
	}
}

// A rolling restart — stop one gateway, start it again, then the other —
// during 60 s of builds through connect with both addresses loses none.
func TestARollingRestartOfTwoGatewaysLosesNoBuild(t *testing.T) {
	env := newHAEnv(t, "--idle", "30s")
	both := env.a.addr + "," + env.b.addr
	if out, err := env.buildVia(t, both); err != nil {
		t.Fatalf("first build: %v\n%s\n%s", err, out, env.bothLogs())
	}

	stop := make(chan struct{})
	type result struct {
		n, failovers int
		failed       []string
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			var r result
			for {
				select {
				case <-stop:
					results <- r
					return
				default:
				}
				out, err := env.buildVia(t, both)
				r.n++
				if strings.Contains(out, "gateway failover") {
					r.failovers++
				}
				if err != nil {
					r.failed = append(r.failed, fmt.Sprintf("build %d: %v\n%s", r.n, err, out))
				}
			}
		}()
	}
	began := time.Now()
	for _, g := range []*gwProc{env.a, env.b} {
		// Let builds run through both for a while, then restart g.
		pause := time.NewTimer(12 * time.Second) // the load's duration between restarts, not synchronisation
		<-pause.C
		g.term(t)
		g.mu.Lock()
		err := g.waitErr
		g.mu.Unlock()
		if err != nil {
			t.Errorf("gateway %s exited with %v after SIGTERM", g.name, err)
		}
		g.start(t)
	}
	if rest := 60*time.Second - time.Since(began); rest > 0 {
		t := time.NewTimer(rest) // the rest of the 60 s of load
		<-t.C
	}
	close(stop)
	total, failovers := 0, 0
	var failed []string
	for range 2 {
		r := <-results
		total += r.n
		failovers += r.failovers
		failed = append(failed, r.failed...)
	}
	t.Logf("%d builds in %s through a rolling restart of both gateways, %d failed, %d moved to the other gateway", total, time.Since(began).Round(time.Second), len(failed), failovers)
	if len(failed) > 0 {
		t.Fatalf("%d of %d builds failed during the rolling restart:\n%s\n%s", len(failed), total, strings.Join(failed, "\n"), env.bothLogs())
	}
	if total < 10 {
		t.Errorf("only %d builds in 60 s: the test did not load the gateways", total)
	}
	if failovers == 0 {
		t.Error("no build moved to the other gateway: the restarts were not under load")
	}
	if !strings.Contains(env.a.logs.String()+env.b.logs.String(), "gateway shutting down") {
		t.Error("no gateway logged its shutdown")
	}
}
