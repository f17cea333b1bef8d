package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/gateway"
	"github.com/wakegate/wakegate/policy"
	"github.com/wakegate/wakegate/webhook"
)

func TestWebhookSecretFileMustBeTheOwnersAlone(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := readSecretFile(write("ok", "s3cret\n", 0o600))
	if err != nil || string(got) != "s3cret" {
		t.Fatalf("readSecretFile = %q, %v; want s3cret without its newline", got, err)
	}
	for _, tc := range []struct{ path, want string }{
		{write("shared", "s3cret", 0o644), "chmod 600"},
		{write("group", "s3cret", 0o640), "chmod 600"},
		{write("empty", "\n", 0o600), "empty"},
		{filepath.Join(dir, "missing"), "no such file"},
		{dir, "not a regular file"},
	} {
		if _, err := readSecretFile(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("readSecretFile(%s) = %v, want an error about %q", filepath.Base(tc.path), err, tc.want)
		}
	}
	w := webhookFlags{secretFile: filepath.Join(dir, "ok"), grace: time.Minute}
	if err := w.validate(""); err == nil || !strings.Contains(err.Error(), "needs --policy") {
		t.Fatalf("the webhook without a policy: %v", err)
	}
	if err := w.validate("policy.toml"); err != nil || string(w.secret) != "s3cret" {
		t.Fatalf("validate = %v, secret %q", err, w.secret)
	}
	if err := (&webhookFlags{grace: 0}).validate(""); err == nil {
		t.Fatal("--prewake-grace 0 accepted")
	}
}

// TestEveryDeliveryResultIsAMetric: each result the webhook reports is one
// the gateway's metrics list from zero.
func TestEveryDeliveryResultIsAMetric(t *testing.T) {
	for _, r := range webhook.Results {
		if !slices.Contains(gateway.DeliveryResults, string(r)) {
			t.Errorf("webhook result %q is not in gateway.DeliveryResults", r)
		}
	}
	if len(webhook.Results) != len(gateway.DeliveryResults) {
		t.Errorf("gateway.DeliveryResults %v lists results the webhook never reports (%v)", gateway.DeliveryResults, webhook.Results)
	}
}

// startsHost is an engine host whose engines are ready at once, counting
// starts per engine.
type startsHost struct {
	mu     sync.Mutex // guards starts
	starts map[string]int
}

func (h *startsHost) Engines(context.Context) ([]string, error) {
	return []string{"engine-0", "engine-1", "engine-2"}, nil
}

func (h *startsHost) Start(_ context.Context, id string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.starts[id]++
	return "tls://127.0.0.1:1", nil
}

func (h *startsHost) Stop(context.Context, string) error { return nil }

func (h *startsHost) count() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.starts)
}

// TestFiftyDeliveriesForOneRepositoryInASecondMakeOneWake: the webhook as
// the gateway wires it, on a real pool: 50 signed deliveries (distinct ids)
// for one repository at once wake its home engine once, and no other; the
// metrics say one woken, 49 coalesced.
func TestFiftyDeliveriesForOneRepositoryInASecondMakeOneWake(t *testing.T) {
	h := &startsHost{starts: map[string]int{}}
	pool, err := gateway.NewPool(t.Context(), h, gateway.EngineConfig{
		Probe: func(context.Context, string) error { return nil },
		Idle:  time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	pol, err := policy.Parse("policy.toml", []byte("[[allow]]\nrepository = \"acme/*\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("s3cret")
	hd, err := newWebhook(secret, pool, time.Hour, func() *policy.Policy { return pol }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(fmt.Sprintf(`{"action":"queued","repository":{"full_name":"acme/app","owner":{"login":"acme"}},`+
		`"workflow_job":{"id":1,"run_id":2,"name":"build","workflow_name":"CI","created_at":%q}}`, time.Now().UTC().Format(time.RFC3339)))
	sig := webhook.SignatureHeader(secret, body)
	var wg sync.WaitGroup
	codes := make(chan int, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := httptest.NewRequest("POST", webhook.Path, bytes.NewReader(body))
			r.Header.Set("X-GitHub-Event", "workflow_job")
			r.Header.Set("X-GitHub-Delivery", fmt.Sprintf("delivery-%d", i))
			r.Header.Set("X-Hub-Signature-256", sig)
			w := httptest.NewRecorder()
			hd.ServeHTTP(w, r)
			codes <- w.Code
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusAccepted {
			t.Fatalf("a delivery was answered %d, want 202", c)
		}
	}
	home := pool.Route("repo:acme/app").ID()
	deadline := time.Now().Add(15 * time.Second)
	for !pool.Route("repo:acme/app").Running() {
		if time.Now().After(deadline) {
			t.Fatal("the home engine did not wake")
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
	if got := h.count(); len(got) != 1 || got[home] != 1 {
		t.Fatalf("starts %v, want the home %s once", got, home)
	}
	rec := httptest.NewRecorder()
	gateway.AdminHandler(pool).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`wakegate_webhook_deliveries_total{result="woken"} 1`,
		`wakegate_webhook_deliveries_total{result="coalesced"} 49`,
		fmt.Sprintf(`wakegate_engine_prewakes_total{engine=%q} 1`, home),
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
