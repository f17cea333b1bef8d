package webhook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

var secret = []byte("It's a Secret to Everybody")

// fakePrewaker records keys; the first pre-wake of a key wakes its engine.
type fakePrewaker struct {
	mu    sync.Mutex // guards keys
	keys  []string
	err   error
	woken map[string]bool
}

func (p *fakePrewaker) Prewake(key string) (string, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = append(p.keys, key)
	if p.err != nil {
		return "", false, p.err
	}
	if p.woken == nil {
		p.woken = map[string]bool{}
	}
	woke := !p.woken[key]
	p.woken[key] = true
	return "engine-0", woke, nil
}

func (p *fakePrewaker) calls() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.keys...)
}

// counts is a Count func's tally.
type counts struct {
	mu sync.Mutex // guards n
	n  map[Result]int
}

func (c *counts) add(r Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[Result]int{}
	}
	c.n[r]++
}

func (c *counts) get(r Result) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[r]
}

// testNow is the tests' wall clock: the sample payload's job was created
// at 10:00.
var testNow = time.Date(2026, 1, 5, 10, 0, 5, 0, time.UTC)

type testHandler struct {
	*Handler
	pw     *fakePrewaker
	counts *counts
	logs   *bytes.Buffer
	now    time.Time
}

func newTestHandler(t *testing.T, edit func(*Config)) *testHandler {
	t.Helper()
	th := &testHandler{pw: &fakePrewaker{}, counts: &counts{}, logs: &bytes.Buffer{}, now: testNow}
	var logMu sync.Mutex
	cfg := Config{
		Secret:   secret,
		Prewaker: th.pw,
		Allow: func(j Job) error {
			if strings.HasPrefix(j.Repository, "acme/") {
				return nil
			}
			return fmt.Errorf("repository %s is not allowed by the gateway's policy", j.Repository)
		},
		Count: th.counts.add,
		Now:   func() time.Time { return th.now },
		Log:   slog.New(slog.NewTextHandler(lockedWriter{&logMu, th.logs}, nil)),
	}
	if edit != nil {
		edit(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	th.Handler = h
	return th
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func samplePayload(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/workflow_job_queued.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withJob edits the sample payload's repository, action and times.
func withJob(t testing.TB, repo, action, created string) []byte {
	b := samplePayload(t)
	b = bytes.ReplaceAll(b, []byte(`"acme/app"`), []byte(fmt.Sprintf("%q", repo)))
	b = bytes.Replace(b, []byte(`"action": "queued"`), []byte(fmt.Sprintf(`"action": %q`, action)), 1)
	b = bytes.ReplaceAll(b, []byte(`"2026-01-05T10:00:00Z"`), []byte(fmt.Sprintf("%q", created)))
	return b
}

// deliver sends body as GitHub would, signed with sig ("" for none).
func (th *testHandler) deliver(event, delivery string, body []byte, sig string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", Path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", event)
	r.Header.Set("X-GitHub-Delivery", delivery)
	if sig != "" {
		r.Header.Set("X-Hub-Signature-256", sig)
	}
	w := httptest.NewRecorder()
	th.ServeHTTP(w, r)
	return w
}

func (th *testHandler) deliverSigned(event, delivery string, body []byte) *httptest.ResponseRecorder {
	return th.deliver(event, delivery, body, SignatureHeader(secret, body))
}

func TestASignedQueuedJobWakesItsRepositorysEngine(t *testing.T) {
	th := newTestHandler(t, nil)
	w := th.deliverSigned("workflow_job", "d-1", samplePayload(t))
	if w.Code != http.StatusAccepted || !strings.HasPrefix(w.Body.String(), "woken:") {
		t.Fatalf("answer %d %q, want 202 woken", w.Code, w.Body)
	}
	if got := th.pw.calls(); len(got) != 1 || got[0] != "repo:acme/app" {
		t.Fatalf("pre-wakes %q, want one of repo:acme/app (the key a certificate naming acme/app is placed by)", got)
	}
	if th.counts.get(Woken) != 1 {
		t.Fatalf("woken counted %d times, want 1", th.counts.get(Woken))
	}
	for _, want := range []string{`result=woken`, `delivery=d-1`, `repository=acme/app`, `action=queued`, `workflow=CI`, `engine=engine-0`, `key=repo:acme/app`} {
		if !strings.Contains(th.logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, th.logs)
		}
	}
	// in_progress when the engine is awake already: no second wake.
	w = th.deliverSigned("workflow_job", "d-2", withJob(t, "acme/app", "in_progress", "2026-01-05T10:00:00Z"))
	if w.Code != http.StatusAccepted || !strings.HasPrefix(w.Body.String(), "coalesced:") {
		t.Fatalf("in_progress: answer %d %q, want 202 coalesced", w.Code, w.Body)
	}
}

func TestDeliveriesThatMustWakeNothing(t *testing.T) {
	body := samplePayload(t)
	for _, tc := range []struct {
		name   string
		send   func(th *testHandler) *httptest.ResponseRecorder
		status int
		result Result
	}{
		{"no signature", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliver("workflow_job", "d", body, "")
		}, 401, BadSignature},
		{"signature by another secret", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliver("workflow_job", "d", body, SignatureHeader([]byte("guess"), body))
		}, 401, BadSignature},
		{"signature of another body", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliver("workflow_job", "d", withJob(t, "acme/lib", "queued", "2026-01-05T10:00:00Z"), SignatureHeader(secret, body))
		}, 401, BadSignature},
		{"sha1 signature header only", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliver("workflow_job", "d", body, "sha1=0123456789abcdef0123456789abcdef01234567")
		}, 401, BadSignature},
		{"signature not hex", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliver("workflow_job", "d", body, "sha256="+strings.Repeat("zz", 32))
		}, 401, BadSignature},
		{"repository the policy refuses", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliverSigned("workflow_job", "d", withJob(t, "evil/app", "queued", "2026-01-05T10:00:00Z"))
		}, 200, NotAllowed},
		{"completed job", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliverSigned("workflow_job", "d", withJob(t, "acme/app", "completed", "2026-01-05T10:00:00Z"))
		}, 200, IgnoredAction},
		{"waiting job", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliverSigned("workflow_job", "d", withJob(t, "acme/app", "waiting", "2026-01-05T10:00:00Z"))
		}, 200, IgnoredAction},
		{"another event", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliverSigned("push", "d", body)
		}, 200, IgnoredEvent},
		{"ping", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliverSigned("ping", "d", []byte(`{"zen":"Design for failure.","hook_id":1}`))
		}, 200, IgnoredEvent},
		{"no delivery id", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliverSigned("workflow_job", "", body)
		}, 400, BadRequest},
		{"not a payload of GitHub's", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliverSigned("workflow_job", "d", []byte(`{"action":"queued","repository":{"full_name":"acme/../x"},"workflow_job":{}}`))
		}, 400, BadRequest},
		{"a job older than the replay window", func(th *testHandler) *httptest.ResponseRecorder {
			return th.deliverSigned("workflow_job", "d", withJob(t, "acme/app", "queued", "2026-01-05T08:00:00Z"))
		}, 200, Stale},
		{"body over the limit, by Content-Length", func(th *testHandler) *httptest.ResponseRecorder {
			big := append(bytes.Repeat([]byte(" "), DefaultMaxBody), body...)
			return th.deliverSigned("workflow_job", "d", big)
		}, 413, TooLarge},
		{"body over the limit, streamed without a length", func(th *testHandler) *httptest.ResponseRecorder {
			big := append(bytes.Repeat([]byte(" "), DefaultMaxBody), body...)
			r := httptest.NewRequest("POST", Path, io.MultiReader(bytes.NewReader(big)))
			r.ContentLength = -1
			r.Header.Set("X-GitHub-Event", "workflow_job")
			r.Header.Set("X-GitHub-Delivery", "d")
			r.Header.Set("X-Hub-Signature-256", SignatureHeader(secret, big))
			w := httptest.NewRecorder()
			th.ServeHTTP(w, r)
			return w
		}, 413, TooLarge},
		{"GET", func(th *testHandler) *httptest.ResponseRecorder {
			w := httptest.NewRecorder()
			th.ServeHTTP(w, httptest.NewRequest("GET", Path, nil))
			return w
		}, 405, BadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := newTestHandler(t, nil)
			w := tc.send(th)
			if w.Code != tc.status || !strings.HasPrefix(w.Body.String(), string(tc.result)+":") {
				t.Fatalf("answer %d %q, want %d %s", w.Code, w.Body, tc.status, tc.result)
			}
			if got := th.pw.calls(); len(got) != 0 {
				t.Fatalf("pre-woke %q", got)
			}
			if th.counts.get(tc.result) != 1 {
				t.Fatalf("%s counted %d times, want 1", tc.result, th.counts.get(tc.result))
			}
		})
	}
}

func TestAReplayedDeliveryWakesNothing(t *testing.T) {
	th := newTestHandler(t, nil)
	body := samplePayload(t)
	if w := th.deliverSigned("workflow_job", "72d3162e-cc78-11e3-81ab-4c9367dc0958", body); w.Code != http.StatusAccepted {
		t.Fatalf("first delivery: %d %s", w.Code, w.Body)
	}
	// The engine stopped since (the fake forgets it): only the replay
	// check stands between the copy and a second wake.
	th.pw.woken = nil
	w := th.deliverSigned("workflow_job", "72d3162e-cc78-11e3-81ab-4c9367dc0958", body)
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Body.String(), "replayed:") {
		t.Fatalf("replay: %d %q, want 200 replayed", w.Code, w.Body)
	}
	if got := th.pw.calls(); len(got) != 1 {
		t.Fatalf("pre-wakes %q, want the first delivery's alone", got)
	}
	// An unsigned copy is refused before the replay cache sees its id: it
	// cannot push genuine ids out.
	th.deliver("workflow_job", "forged", body, "")
	if th.replays.len() != 1 {
		t.Fatalf("replay cache holds %d ids after an unsigned delivery, want 1", th.replays.len())
	}
}

func TestReplayCacheIsBoundedInSizeAndTime(t *testing.T) {
	c := newReplayCache(time.Hour, 3)
	t0 := testNow
	for i, id := range []string{"a", "b", "c"} {
		if c.check(id, t0.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("%s: a first delivery taken for a replay", id)
		}
	}
	if !c.check("a", t0.Add(3*time.Second)) {
		t.Fatal("a replay within the window and the cap was not caught")
	}
	c.check("d", t0.Add(4*time.Second)) // full: "a", the oldest, leaves
	if c.len() != 3 {
		t.Fatalf("cache holds %d ids, want its cap 3", c.len())
	}
	if !c.check("b", t0.Add(5*time.Second)) {
		t.Fatal("b left the cache before older ids")
	}
	// An hour later every id has expired.
	if c.check("d", t0.Add(time.Hour+5*time.Second)) {
		t.Fatal("an id was remembered past the window")
	}
	if c.len() != 1 {
		t.Fatalf("cache holds %d ids after the window, want 1 (the new one)", c.len())
	}
}

func TestAFailedPrewakeIsAnsweredAndCounted(t *testing.T) {
	th := newTestHandler(t, nil)
	th.pw.err = errors.New("engine unavailable: gateway is shutting down")
	w := th.deliverSigned("workflow_job", "d", samplePayload(t))
	if w.Code != http.StatusServiceUnavailable || th.counts.get(Failed) != 1 {
		t.Fatalf("answer %d %q, failed counted %d", w.Code, w.Body, th.counts.get(Failed))
	}
}

func TestUnsignedNoiseIsLoggedAtABoundedRate(t *testing.T) {
	th := newTestHandler(t, nil)
	for range 100 {
		th.deliver("workflow_job", "d", samplePayload(t), "sha256=00")
	}
	if n := strings.Count(th.logs.String(), "result=bad_signature"); n != 1 {
		t.Fatalf("%d log lines for 100 unsigned deliveries within a second, want 1", n)
	}
	if th.counts.get(BadSignature) != 100 {
		t.Fatalf("counted %d, want every one of 100", th.counts.get(BadSignature))
	}
	th.now = th.now.Add(11 * time.Second)
	th.deliver("workflow_job", "d", samplePayload(t), "")
	if !strings.Contains(th.logs.String(), "similar_not_logged=99") {
		t.Fatalf("the next line does not say how many were left out:\n%s", th.logs)
	}
}

func TestTheSecretIsNeverLogged(t *testing.T) {
	th := newTestHandler(t, nil)
	body := samplePayload(t)
	th.deliverSigned("workflow_job", "d-1", body)
	th.deliver("workflow_job", "d-2", body, "sha256="+strings.Repeat("0", 64))
	if strings.Contains(th.logs.String(), string(secret)) {
		t.Fatalf("the secret is in the log:\n%s", th.logs)
	}
}

func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	ok := Config{Secret: secret, Prewaker: &fakePrewaker{}, Allow: func(Job) error { return nil }}
	for _, edit := range []func(*Config){
		func(c *Config) { c.Secret = nil },
		func(c *Config) { c.Prewaker = nil },
		func(c *Config) { c.Allow = nil },
	} {
		c := ok
		edit(&c)
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted it", c)
		}
	}
}
