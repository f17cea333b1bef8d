package main

import (
	"crypto/tls"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/internal/pgtest"
)

// echoes writes msg on c and reads it back, within a bound.
func echoes(c *tls.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// echoGatewayOnDB runs a gateway on the shared database dsn whose engines
// echo (newEchoExec), on a fresh CA, and issues the client "ci" through it
// (so that its certificate is in the database): the gateway's log and
// address, the CA directory and the client's credentials.
func echoGatewayOnDB(t *testing.T, dsn string, extra ...string) (gw *logWatch, addr, caDir, creds string) {
	t.Helper()
	ee := newEchoExec(t)
	for _, kv := range ee.env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	work := t.TempDir()
	caDir, creds = filepath.Join(work, "ca"), filepath.Join(work, "creds")
	mustRun(t, "certs", "init", "--ca-dir", caDir, "--no-password")
	gw = background(t, append(append(append([]string{"gateway", "--ca-dir", caDir, "--ca-db", dsn}, extra...), ee.args...),
		"--listen", "127.0.0.1:0", "--admin", "", "--ca-listen", "127.0.0.1:0", "--idle", "60s")...)
	m, _ := gw.waitFor(t, listeningRE, 0, 20*time.Second)
	mustRun(t, "certs", "issue", "--ca-dir", caDir, "--identity", "ci", "--out", creds)
	return gw, m[1], caDir, creds
}

// A gateway on a shared database that goes down: established connections
// keep flowing; new enrolments fail and say why; new handshakes are judged
// by the last revocation list read for --revocation-staleness, then
// refused; when the database is back the gateway recovers by itself.
func TestAGatewayOutlivesItsDatabaseGoingDown(t *testing.T) {
	const staleness = 4 * time.Second
	pg := pgtest.Start(t)
	gw, gwAddr, caDir, creds := echoGatewayOnDB(t, pg.DSN("wakegate"), "--revocation-staleness", staleness.String())
	work := t.TempDir()
	cert, roots, err := certs.LoadClientCreds(creds)
	if err != nil {
		t.Fatal(err)
	}
	cfg := certs.ClientTLS(func() *tls.Certificate { return cert }, roots, "127.0.0.1")
	dial := func() (*tls.Conn, error) {
		c, err := tls.Dial("tcp", gwAddr, cfg)
		if err != nil {
			return nil, err
		}
		if err := echoes(c, "hello"); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	established, err := dial()
	if err != nil {
		t.Fatalf("through the gateway with the database up: %v\n%s", err, gw)
	}
	defer established.Close()

	mark := gw.len()
	pg.Stop()
	down := time.Now()
	if err := echoes(established, "still flowing"); err != nil {
		t.Fatalf("an established connection stopped when the database went down: %v", err)
	}
	if c, err := dial(); err != nil {
		t.Errorf("a new connection within the staleness bound was refused: %v\n%s", err, gw)
	} else {
		c.Close()
	}
	out := newLogWatch()
	err = run(t.Context(), []string{"certs", "issue", "--dir", caDir, "--name", "newcomer", "--out", filepath.Join(work, "newcomer")}, out, out)
	if err == nil {
		t.Errorf("a certificate was issued with the database down:\n%s", out)
	} else {
		t.Logf("enrolment with the database down: %v", err)
	}
	gw.waitFor(t, regexp.MustCompile(`msg="CA database unreachable`), mark, 10*time.Second)

	// Past the bound: refused, and the established connection still flows.
	deadline := time.Now().Add(staleness + 15*time.Second)
	for {
		c, err := dial()
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("new connections still let in %s after the database went down (staleness %s)", time.Since(down), staleness)
		}
		time.Sleep(100 * time.Millisecond) // polling, bounded by the deadline
	}
	if since := time.Since(down); since < staleness-time.Second {
		t.Errorf("new connections refused %s after the database went down, before the %s bound", since, staleness)
	}
	if err := echoes(established, "flowing past the bound"); err != nil {
		t.Fatalf("an established connection stopped past the staleness bound: %v\n%s", err, gw)
	}

	// A CI job enrolling now is told to wait, and gets through once the
	// database is back: its token is not spent by a refused attempt.
	fp := strings.TrimSpace(mustRun(t, "certs", "fingerprint", "--dir", caDir))
	tok := strings.TrimSpace(mustRun(t, "certs", "token", "--dir", caDir, "--name", "waiting-job"))
	caURL := "https://" + regexp.MustCompile(`msg="CA API listening" addr=(\S+)`).FindStringSubmatch(gw.String())[1]
	jobOut := newLogWatch()
	jobDone := make(chan error, 1)
	go func() {
		jobDone <- run(t.Context(), []string{"connect", "--gateway", gwAddr, "--ca-url", caURL, "--ca-fingerprint", fp,
			"--token", tok, "--listen", "127.0.0.1:0", "--", "true"}, jobOut, jobOut)
	}()
	jobOut.waitFor(t, regexp.MustCompile(`database does not answer.*retrying in`), 0, 30*time.Second)

	pg.Start()
	select {
	case err := <-jobDone:
		if err != nil {
			t.Fatalf("the job that enrolled while the database was down failed: %v\n%s", err, jobOut)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the job that enrolled while the database was down did not get through within 60s of its return:\n%s", jobOut)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		c, err := dial()
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway did not recover within 30s of the database's return: %v\n%s", err, gw)
		}
		time.Sleep(100 * time.Millisecond) // polling, bounded by the deadline
	}
	gw.waitFor(t, regexp.MustCompile(`msg="CA database reachable again"`), mark, 10*time.Second)
	mustRun(t, "certs", "issue", "--dir", caDir, "--name", "newcomer", "--out", filepath.Join(work, "newcomer"))
}

// An operator with a copy of the CA directory and access to the shared
// database, on no gateway's machine: 'certs list' sees what the gateways
// issued, and 'certs revoke --kill' there cuts the certificate's
// connection at the gateway.
func TestCertsCommandsWorkOnTheSharedDatabaseFromAnywhere(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.DSN("wakegate")
	gw, gwAddr, caDir, creds := echoGatewayOnDB(t, dsn)
	operatorCA := copyCA(t, caDir) // another machine's copy: no gateway serves it
	serial := leafSerial(t, creds)

	t.Setenv("WAKEGATE_CA_DB", dsn)
	if list := mustRun(t, "certs", "list", "--ca-dir", operatorCA); !strings.Contains(list, serial) {
		t.Fatalf("certs list on the shared database (from $WAKEGATE_CA_DB) does not show %s:\n%s", serial, list)
	}
	t.Setenv("WAKEGATE_CA_DB", "")

	cert, roots, err := certs.LoadClientCreds(creds)
	if err != nil {
		t.Fatal(err)
	}
	cfg := certs.ClientTLS(func() *tls.Certificate { return cert }, roots, "127.0.0.1")
	c, err := tls.Dial("tcp", gwAddr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoes(c, "before"); err != nil {
		t.Fatalf("through the gateway: %v\n%s", err, gw)
	}
	out := mustRun(t, "certs", "revoke", "--ca-dir", operatorCA, "--ca-db", dsn, "--kill", serial)
	if !strings.Contains(out, "every gateway on the shared database closes") {
		t.Errorf("certs revoke --kill on the shared database says:\n%s", out)
	}
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the gateway did not close the connection of a certificate revoked with --kill from elsewhere (read: %v)\n%s", err, gw)
	}
	if again, err := tls.Dial("tcp", gwAddr, cfg); err == nil {
		if echoes(again, "after") == nil {
			t.Fatal("the gateway let in a certificate revoked from elsewhere")
		}
		again.Close()
	}
	errOut := newLogWatch()
	if err := run(t.Context(), []string{"certs", "list", "--ca-dir", operatorCA, "--ca-db", "mysql://x"}, errOut, errOut); err == nil || !strings.Contains(err.Error(), "postgresql://") {
		t.Errorf("certs list --ca-db mysql://x: %v", err)
	}
}
