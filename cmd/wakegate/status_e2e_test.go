package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/gateway"
)

// TestStatusAndMetricsOfARealGateway: a real gateway on a real buildkitd
// is ready once listening (/readyz 200); after a build through
// connect, 'wakegate status' shows the woken engine with its cache and
// the certificates (the engine's too), --json passes the admin's JSON
// through, and /metrics counts the connection, its bytes, the wake by
// phase and the certificates' expiry.
func TestStatusAndMetricsOfARealGateway(t *testing.T) {
	requireRoot(t)
	buildkitd := tool(t, "WAKEGATE_BUILDKITD", "buildkitd")
	buildctl := tool(t, "WAKEGATE_BUILDCTL", "buildctl")
	bctx := buildContext(t, staticBusybox(t))
	t.Setenv("WAKEGATE_CA_PASSWORD", "")

	work := t.TempDir()
	caDir, creds := filepath.Join(work, "ca"), filepath.Join(work, "creds")
	mustRun(t, "certs", "init", "--dir", caDir, "--no-password")
	mustRun(t, "certs", "issue", "--dir", caDir, "--name", "ci", "--out", creds)
	state, err := os.MkdirTemp("", "wg-status-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	gw := background(t, "gateway", "--ca-dir", caDir, "--state", state, "--buildkitd", buildkitd,
		"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--ca-listen", "127.0.0.1:0", "--idle", "60s", "--wake-timeout", "60s")
	m, _ := gw.waitFor(t, listeningRE, 0, 30*time.Second)
	gwAddr := m[1]
	m, _ = gw.waitFor(t, adminListeningRE, 0, time.Second)
	adminURL := "http://" + m[1]
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(adminURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("/readyz of a listening gateway = %d %s, want 200", code, body)
	}

	buildThrough(t, "build", gwAddr, creds, buildctl, bctx, gw)
	gw.waitFor(t, engineReadyRE, 0, time.Second)

	out := mustRun(t, "status", "--admin", adminURL)
	for _, re := range []string{
		`(?m)^engine-0\s+running\s+\d+\s+\d+\s+\d+(\.\d)? [KMG]?i?B\s+\S+\s+\S+`,
		`(?m)^engine:engine-0\s+\d{4}-\d\d-\d\dT`,
		`(?m)^gateway\s+\d{4}-\d\d-\d\dT`,
		`(?m)^ca_root\s+`,
		`(?m)^ca_intermediate\s+`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status output lacks %s:\n%s", re, out)
		}
	}
	var st gateway.Status
	if err := json.Unmarshal([]byte(mustRun(t, "status", "--admin", adminURL, "--json")), &st); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	if !st.Ready || len(st.Engines) != 1 || st.Engines[0].Wakes != 1 || st.Engines[0].UpSince.IsZero() || len(st.Certs) != 4 {
		t.Errorf("status --json = %+v, want ready, one engine woken once and up, four certificates (the engine's too)", st)
	}
	if e := st.Engines[0]; e.CacheBytes <= 0 || e.CacheError != "" {
		t.Errorf("engine-0's cache = %d %q, want its BuildKit's disk usage after a build", e.CacheBytes, e.CacheError)
	}

	_, metrics := get("/metrics")
	for _, re := range []string{
		`(?m)^wakegate_connections_total\{result="closed"\} [1-9]`,
		`(?m)^wakegate_connection_bytes_total\{direction="to_engine"\} [1-9]`,
		`(?m)^wakegate_connection_bytes_total\{direction="to_client"\} [1-9]`,
		`(?m)^wakegate_engine_wake_seconds_count\{engine="engine-0"\} 1$`,
		`(?m)^wakegate_engine_wake_seconds_sum\{engine="engine-0"\} [0-9.e+-]+$`,
		`(?m)^wakegate_certificate_expiry_timestamp_seconds\{cert="gateway"\} \d`,
		`(?m)^wakegate_certificate_expiry_timestamp_seconds\{cert="ca_root"\} \d`,
		`(?m)^wakegate_certificate_expiry_timestamp_seconds\{cert="engine:engine-0"\} \d`,
		`(?m)^wakegate_wake_phase_seconds_count\{from="stopped",phase="host_start"\} 1$`,
		`(?m)^wakegate_wake_phase_seconds_count\{from="stopped",phase="engine_ready"\} 1$`,
		`(?m)^wakegate_wake_seconds_count\{from="stopped"\} 1$`,
		`(?m)^go_goroutines `,
	} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Errorf("metrics lack %s", re)
		}
	}
	// The gateway keeps --engine-ahead (2) streams open to the engine its
	// build used, handed over by the local engine.
	spares := regexp.MustCompile(`(?m)^wakegate_engine_connections_ahead 2$`)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, metrics = get("/metrics"); spares.MatchString(metrics) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no two streams made ahead to the engine within 30 s:\n%s", regexp.MustCompile(`(?m)^wakegate_engine_connections_ahead.*$`).FindString(metrics))
		}
		time.Sleep(50 * time.Millisecond) // polling /metrics, bounded
	}
}

// TestStatusSaysWhatToDoWhenTheAdminIsUnreachable: no gateway at --admin
// is an error that says to start one or pass the right URL.
func TestStatusSaysWhatToDoWhenTheAdminIsUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	out := newLogWatch()
	err = run(t.Context(), []string{"status", "--admin", addr}, out, out)
	if err == nil || !strings.Contains(err.Error(), "is the gateway running? pass --admin URL") {
		t.Fatalf("status against nothing = %v, want the hint to pass --admin", err)
	}
}
