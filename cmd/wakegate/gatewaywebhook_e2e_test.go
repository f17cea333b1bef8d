package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/webhook"
)

var adminListeningRE = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)

// TestASignedDeliveryWakesTheEngineBeforeAnyConnection: a real gateway
// with a real BuildKit engine and the webhook on its CA API. A delivery
// without the signature, and one for a repository the policy refuses,
// wake nothing; a signed delivery of a queued job wakes the engine with
// no client connected; no job comes, and the engine is stopped again when
// the grace ends (3 s, well before the 30 s idle period).
func TestASignedDeliveryWakesTheEngineBeforeAnyConnection(t *testing.T) {
	requireRoot(t)
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	mustRun(t, "certs", "init", "--dir", caDir, "--no-password")
	pol := filepath.Join(dir, "policy.toml")
	if err := os.WriteFile(pol, []byte("[[allow]]\nrepository = \"acme/*\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	secret := []byte("a webhook secret of the operator's")
	secretFile := filepath.Join(dir, "webhook-secret")
	if err := os.WriteFile(secretFile, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	state, err := os.MkdirTemp("", "wg-webhook-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	logs := background(t, "gateway", "--ca-dir", caDir, "--state", state, "--buildkitd", tool(t, "WAKEGATE_BUILDKITD", "buildkitd"),
		"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--ca-listen", "127.0.0.1:0", "--idle", "30s",
		"--policy", pol, "--oidc-issuer", "https://127.0.0.1:1", // no issuer is reached: no job enrols here
		"--github-webhook-secret-file", secretFile, "--prewake-grace", "3s")
	logs.waitFor(t, listeningRE, 0, 30*time.Second)
	m, _ := logs.waitFor(t, caListeningRE, 0, time.Second)
	hookURL := "https://" + m[1] + webhook.Path
	m, _ = logs.waitFor(t, adminListeningRE, 0, time.Second)
	adminURL := "http://" + m[1]
	ca, err := certs.Load(caDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	if strings.Contains(logs.String(), string(secret)) {
		t.Fatal("the gateway logged the webhook's secret")
	}

	deliver := func(repo, delivery string, sign bool) (int, string) {
		t.Helper()
		body := []byte(fmt.Sprintf(`{"action":"queued","repository":{"full_name":%q},"workflow_job":{"id":7,"run_id":8,"name":"build",`+
			`"workflow_name":"CI","created_at":%q}}`, repo, time.Now().UTC().Format(time.RFC3339)))
		req, err := http.NewRequest("POST", hookURL, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "workflow_job")
		req.Header.Set("X-GitHub-Delivery", delivery)
		if sign {
			req.Header.Set("X-Hub-Signature-256", webhook.SignatureHeader(secret, body))
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	engineState := func() string {
		t.Helper()
		resp, err := http.Get(adminURL + "/engines")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		m := regexp.MustCompile(`"state":"(\w+)"`).FindStringSubmatch(string(b))
		if m == nil {
			t.Fatalf("no engine state in %s", b)
		}
		return m[1]
	}

	if code, body := deliver("acme/app", "unsigned", false); code != http.StatusUnauthorized {
		t.Fatalf("unsigned delivery: %d %s, want 401", code, body)
	}
	if code, body := deliver("evil/app", "refused", true); code != http.StatusOK || !strings.HasPrefix(body, "not_allowed") {
		t.Fatalf("refused repository: %d %s, want 200 not_allowed", code, body)
	}
	if st := engineState(); st != "stopped" || strings.Contains(logs.String(), "engine waking") {
		t.Fatalf("engine %s after an unsigned and a refused delivery: they woke it", st)
	}

	from := logs.len()
	if code, body := deliver("acme/app", "72d3162e-cc78-11e3-81ab-4c9367dc0958", true); code != http.StatusAccepted || !strings.HasPrefix(body, "woken") {
		t.Fatalf("signed delivery: %d %s, want 202 woken", code, body)
	}
	_, at := logs.waitFor(t, regexp.MustCompile(`msg="engine ready" engine=engine-0`), from, 60*time.Second)
	if st := engineState(); st != "running" {
		t.Fatalf("engine %s after the pre-wake, want running", st)
	}
	if strings.Contains(logs.String()[from:], "connection closed") || strings.Contains(logs.String()[from:], "wake request") {
		t.Fatal("a client connected: the engine was not woken by the delivery alone")
	}
	if code, body := deliver("acme/app", "72d3162e-cc78-11e3-81ab-4c9367dc0958", true); code != http.StatusOK || !strings.HasPrefix(body, "replayed") {
		t.Fatalf("the same delivery again: %d %s, want 200 replayed", code, body)
	}
	logs.waitFor(t, regexp.MustCompile(`msg="pre-woken engine stopping: no connection came" engine=engine-0`), at, 30*time.Second)
	logs.waitFor(t, regexp.MustCompile(`msg="engine stopped" engine=engine-0`), at, 60*time.Second)

	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`wakegate_webhook_deliveries_total{result="woken"} 1`,
		`wakegate_webhook_deliveries_total{result="bad_signature"} 1`,
		`wakegate_webhook_deliveries_total{result="not_allowed"} 1`,
		`wakegate_webhook_deliveries_total{result="replayed"} 1`,
		`wakegate_engine_prewakes_unused_total{engine="engine-0"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics)
		}
	}
}
