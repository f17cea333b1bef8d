package main

import (
	"context"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	stepca "github.com/smallstep/certificates/ca"
	"github.com/wakegate/wakegate/connect"
	"github.com/wakegate/wakegate/engine"
	"go.step.sm/crypto/pemutil"
)

var caListeningRE = regexp.MustCompile(`msg="CA API listening" addr=(\S+)`)

// certGateway runs a gateway with a real engine and its CA API on loopback.
type certGateway struct {
	caDir, addr, caURL, fp, state string
	logs                          *logWatch
}

func startCertGateway(t *testing.T, extra ...string) *certGateway {
	t.Helper()
	requireRoot(t)
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	g := &certGateway{caDir: filepath.Join(t.TempDir(), "ca")}
	out := mustRun(t, "certs", "init", "--dir", g.caDir, "--no-password")
	g.fp = strings.TrimSpace(mustRun(t, "certs", "fingerprint", "--dir", g.caDir))
	if !strings.Contains(out, g.fp) {
		t.Fatalf("certs init did not print the fingerprint %s:\n%s", g.fp, out)
	}
	state, err := os.MkdirTemp("", "wg-certs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	g.state = state
	args := append([]string{"gateway", "--ca-dir", g.caDir, "--state", state, "--buildkitd", tool(t, "WAKEGATE_BUILDKITD", "buildkitd"),
		"--listen", "127.0.0.1:0", "--admin", "", "--ca-listen", "127.0.0.1:0", "--idle", "30s"}, extra...)
	g.logs = background(t, args...)
	m, _ := g.logs.waitFor(t, listeningRE, 0, 20*time.Second)
	g.addr = m[1]
	m, _ = g.logs.waitFor(t, caListeningRE, 0, time.Second)
	g.caURL = "https://" + m[1]
	return g
}

func (g *certGateway) connectWait(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out := newLogWatch()
	err := run(t.Context(), append([]string{"connect", "--wait", "--wait-timeout", "60s", "--gateway", g.addr}, args...), out, out)
	return out.String(), err
}

func TestTokenEnrolment(t *testing.T) {
	g := startCertGateway(t)
	tok := strings.TrimSpace(mustRun(t, "certs", "token", "--dir", g.caDir, "--name", "ci-job", "--ttl", "5m"))

	t.Run("a fresh token is exchanged for a certificate the gateway accepts", func(t *testing.T) {
		out, err := g.connectWait(t, "--ca-url", g.caURL, "--ca-fingerprint", g.fp, "--token", tok)
		if err != nil {
			t.Fatalf("connect with a fresh token: %v\n%s", err, out)
		}
		if !strings.Contains(out, `identity=ci-job`) || !strings.Contains(out, "ready after") {
			t.Fatalf("connect did not enrol as ci-job and reach a ready engine:\n%s", out)
		}
	})
	t.Run("an enrolment asks for the lifetime given", func(t *testing.T) {
		tok := strings.TrimSpace(mustRun(t, "certs", "token", "--dir", g.caDir, "--name", "short-lived"))
		out, err := g.connectWait(t, "--ca-url", g.caURL, "--ca-fingerprint", g.fp, "--token", tok, "--cert-ttl", "2m")
		if err != nil {
			t.Fatalf("connect --cert-ttl 2m: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`identity=short-lived serial=\d+ not_after=(\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no enrolment line:\n%s", out)
		}
		notAfter, err := time.Parse(time.RFC3339, m[1])
		if left := time.Until(notAfter); err != nil || left < time.Minute || left > 3*time.Minute {
			t.Fatalf("enrolled certificate expires in %s, want about 2m", left)
		}
	})
	t.Run("a used token is refused", func(t *testing.T) {
		_, err := g.connectWait(t, "--ca-url", g.caURL, "--ca-fingerprint", g.fp, "--token", tok)
		if err == nil || !strings.Contains(err.Error(), "refused the token") {
			t.Fatalf("reusing a token = %v, want the CA's refusal", err)
		}
	})
	t.Run("a CA with another fingerprint is not trusted", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other")
		mustRun(t, "certs", "init", "--dir", other, "--no-password")
		wrong := strings.TrimSpace(mustRun(t, "certs", "fingerprint", "--dir", other))
		tok := strings.TrimSpace(mustRun(t, "certs", "token", "--dir", g.caDir, "--name", "ci-job"))
		_, err := g.connectWait(t, "--ca-url", g.caURL, "--ca-fingerprint", wrong, "--token", tok)
		if err == nil || !strings.Contains(err.Error(), "does not present a root with fingerprint") {
			t.Fatalf("connect with a wrong fingerprint = %v, want a refusal naming the fingerprint", err)
		}
	})
	t.Run("a token from another CA is refused", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other")
		mustRun(t, "certs", "init", "--dir", other, "--no-password")
		tok := strings.TrimSpace(mustRun(t, "certs", "token", "--dir", other, "--name", "ci-job"))
		_, err := g.connectWait(t, "--ca-url", g.caURL, "--ca-fingerprint", g.fp, "--token", tok)
		if err == nil || !strings.Contains(err.Error(), "refused the token") {
			t.Fatalf("a foreign token = %v, want the CA's refusal", err)
		}
	})
	t.Run("the token comes from the environment too", func(t *testing.T) {
		t.Setenv("WAKEGATE_TOKEN", strings.TrimSpace(mustRun(t, "certs", "token", "--dir", g.caDir, "--name", "env-job")))
		if out, err := g.connectWait(t, "--ca-url", g.caURL, "--ca-fingerprint", g.fp); err != nil || !strings.Contains(out, "identity=env-job") {
			t.Fatalf("connect with $WAKEGATE_TOKEN = %v\n%s", err, out)
		}
	})
	t.Run("a certificate from smallstep's own client is accepted by the gateway", func(t *testing.T) {
		sc, err := stepca.NewClient(g.caURL, stepca.WithRootSHA256(g.fp))
		if err != nil {
			t.Fatal(err)
		}
		tok := strings.TrimSpace(mustRun(t, "certs", "token", "--dir", g.caDir, "--name", "step-client"))
		req, key, err := stepca.CreateSignRequest(tok)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := sc.Sign(req)
		if err != nil {
			t.Fatalf("smallstep client sign: %v", err)
		}
		root, err := sc.Root(g.fp)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		var chain []byte
		for _, c := range resp.CertChainPEM {
			chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		keyPEM, err := pemutil.Serialize(key)
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string][]byte{
			"client.crt": chain,
			"client.key": pem.EncodeToMemory(keyPEM),
			"ca.crt":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.RootPEM.Raw}),
		} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := g.connectWait(t, "--creds", dir); err != nil {
			t.Fatalf("the gateway refused a certificate from smallstep's client: %v\n%s", err, out)
		}
		g.logs.waitFor(t, regexp.MustCompile(`identity=step-client`), 0, 5*time.Second)
	})
	t.Run("issue and list go through the running gateway", func(t *testing.T) {
		mustRun(t, "certs", "issue", "--dir", g.caDir, "--name", "operator-issued", "--out", filepath.Join(t.TempDir(), "c"))
		list := mustRun(t, "certs", "list", "--dir", g.caDir)
		for _, want := range []string{"ci-job", "env-job", "operator-issued", "wakegate-gateway"} {
			if !strings.Contains(list, want) {
				t.Errorf("certs list lacks %s:\n%s", want, list)
			}
		}
	})
}

func TestRevokedClientIsRefusedAndKilled(t *testing.T) {
	g := startCertGateway(t)
	creds := filepath.Join(t.TempDir(), "creds")
	mustRun(t, "certs", "issue", "--dir", g.caDir, "--name", "leaver", "--out", creds)
	if out, err := g.connectWait(t, "--creds", creds); err != nil {
		t.Fatalf("connect before revocation: %v\n%s", err, out)
	}

	// A long-lived connection through a sidecar, as a running build holds.
	sc := background(t, "connect", "--gateway", g.addr, "--creds", creds, "--listen", "127.0.0.1:0")
	m, _ := sc.waitFor(t, sidecarRE, 0, 10*time.Second)
	bk, err := client.New(t.Context(), "tcp://"+m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	if _, err := bk.ListWorkers(t.Context()); err != nil {
		t.Fatalf("ListWorkers before revocation: %v", err)
	}

	list := mustRun(t, "certs", "list", "--dir", g.caDir, "--json")
	if !strings.Contains(list, `"identity":"leaver"`) {
		t.Fatalf("certs list does not show leaver:\n%s", list)
	}
	out := mustRun(t, "certs", "revoke", "--dir", g.caDir, "--name", "leaver", "--kill", "--reason", "left the team")
	revokedAt := time.Now()
	if !strings.Contains(out, "revoked") {
		t.Fatalf("certs revoke printed %q", out)
	}
	g.logs.waitFor(t, regexp.MustCompile(`closed connections of a revoked certificate`), 0, 5*time.Second)

	_, err = g.connectWait(t, "--creds", creds)
	if !errors.Is(err, connect.ErrRefused) {
		t.Fatalf("connect after revocation = %v, want a refusal", err)
	}
	if took := time.Since(revokedAt); took > 5*time.Second {
		t.Fatalf("revocation took %s to take effect, want under 5s", took)
	}
	g.logs.waitFor(t, regexp.MustCompile(`handshake failed.*is revoked`), 0, 5*time.Second)
	if list := mustRun(t, "certs", "list", "--dir", g.caDir); !regexp.MustCompile(`leaver\s+\S+\s+revoked`).MatchString(list) {
		t.Fatalf("certs list does not show leaver revoked:\n%s", list)
	}
}

// TestRotationUnderContinuousTraffic gives every party — client, gateway,
// CA API, engine — 10-second certificates and keeps connections flowing
// through connect, the gateway and the engine for at least five rotations
// of each: not one may fail, and a connection opened before the rotations
// survives them.
func TestRotationUnderContinuousTraffic(t *testing.T) {
	g := startCertGateway(t, "--cert-ttl", "10s")
	creds := filepath.Join(t.TempDir(), "creds")
	mustRun(t, "certs", "issue", "--dir", g.caDir, "--name", "busy", "--ttl", "10s", "--out", creds)
	sc := background(t, "connect", "--gateway", g.addr, "--creds", creds, "--ca-url", g.caURL, "--listen", "127.0.0.1:0")
	m, _ := sc.waitFor(t, sidecarRE, 0, 10*time.Second)
	addr := "tcp://" + m[1]

	longLived, err := client.New(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer longLived.Close()

	ctx, stop := context.WithCancel(t.Context())
	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[error] // an atomic.Value would panic on errors of different types
	var wg sync.WaitGroup
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, &err)
	}
	wg.Add(2)
	go func() { // new connections, back to back
		defer wg.Done()
		for ctx.Err() == nil {
			pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := engine.Probe(pctx, addr)
			cancel()
			switch {
			case err == nil:
				ok.Add(1)
			case ctx.Err() == nil:
				fail(err)
			}
		}
	}()
	go func() { // one connection, kept
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := longLived.ListWorkers(ctx); err != nil && ctx.Err() == nil {
				fail(err)
			}
		}
	}()

	renewed := func(w *logWatch, cert string) int {
		return len(regexp.MustCompile(`msg="certificate renewed" cert=`+cert+` `).FindAllString(w.String(), -1))
	}
	engineLog := filepath.Join(g.state, "engine-0", "engine.log")
	engineRenewed := func() int {
		b, _ := os.ReadFile(engineLog)
		w := newLogWatch()
		w.Write(b)
		return renewed(w, "wakegate-engine-0")
	}
	deadline := time.Now().Add(3 * time.Minute)
	for renewed(sc, "client") < 5 || renewed(g.logs, "wakegate-gateway") < 5 || renewed(g.logs, "ca-api") < 5 || engineRenewed() < 5 {
		if time.Now().After(deadline) {
			stop()
			wg.Wait()
			t.Fatalf("too few rotations in 3 minutes: client %d, gateway %d, CA API %d, engine %d",
				renewed(sc, "client"), renewed(g.logs, "wakegate-gateway"), renewed(g.logs, "ca-api"), engineRenewed())
		}
		if failed.Load() > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling the logs with a deadline
	}
	stop()
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d connections failed during rotation; first: %v\nconnect's warnings:\n%s\ngateway's warnings:\n%s",
			n, n+ok.Load(), *firstErr.Load(), warnings(sc), warnings(g.logs))
	}
	t.Logf("%d connections, 0 failed, across %d client, %d gateway, %d CA API and %d engine rotations",
		ok.Load(), renewed(sc, "client"), renewed(g.logs, "wakegate-gateway"), renewed(g.logs, "ca-api"), engineRenewed())
	if ok.Load() < 50 {
		t.Fatalf("only %d connections succeeded: not continuous traffic", ok.Load())
	}
}
