package flytest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	fly "github.com/superfly/fly-go"
)

func do(t *testing.T, srv *httptest.Server, method, path, nonce string, body any) *http.Response {
	t.Helper()
	var rd *strings.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	} else {
		rd = strings.NewReader("")
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL+"/v1/apps/a"+path, rd)
	req.Header.Set("Authorization", "Bearer x")
	if nonce != "" {
		req.Header.Set("fly-machine-lease-nonce", nonce)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func newMachine(t *testing.T, opts Options) (*Emulator, *httptest.Server, string) {
	t.Helper()
	opts.Dir = t.TempDir()
	em := New(opts)
	srv := httptest.NewServer(em)
	t.Cleanup(func() { srv.Close(); em.Close() })
	resp := do(t, srv, "POST", "/machines", "", fly.LaunchMachineInput{SkipLaunch: true, Config: &fly.MachineConfig{Image: "x"}})
	var m fly.Machine
	json.NewDecoder(resp.Body).Decode(&m)
	if m.ID == "" || m.State != "created" {
		t.Fatalf("create: %d %+v", resp.StatusCode, m)
	}
	return em, srv, m.ID
}

func TestRequestsWithoutATokenAreRefused(t *testing.T) {
	_, srv, _ := newMachine(t, Options{})
	resp, err := http.Get(srv.URL + "/v1/apps/a/machines")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", resp.StatusCode)
	}
}

func TestWaitLongPollsThenTimesOutWith408(t *testing.T) {
	_, srv, id := newMachine(t, Options{})
	began := time.Now()
	resp := do(t, srv, "GET", "/machines/"+id+"/wait?state=started&timeout=1", "", nil)
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("wait on a machine that never starts: %d, want 408", resp.StatusCode)
	}
	if took := time.Since(began); took < time.Second {
		t.Fatalf("wait returned after %s, before its 1s timeout", took)
	}
	do(t, srv, "POST", "/machines/"+id+"/start", "", nil)
	if resp := do(t, srv, "GET", "/machines/"+id+"/wait?state=started&timeout=10", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("wait for a starting machine: %d", resp.StatusCode)
	}
}

func TestLeasesExcludeOtherClientsUntilReleasedOrExpired(t *testing.T) {
	_, srv, id := newMachine(t, Options{})
	resp := do(t, srv, "POST", "/machines/"+id+"/lease?ttl=1", "", nil)
	var l fly.MachineLease
	json.NewDecoder(resp.Body).Decode(&l)
	if l.Data == nil || l.Data.Nonce == "" {
		t.Fatalf("acquire: %d %+v", resp.StatusCode, l)
	}
	if resp := do(t, srv, "POST", "/machines/"+id+"/lease", "", nil); resp.StatusCode != http.StatusConflict {
		t.Fatalf("second acquire: %d, want 409", resp.StatusCode)
	}
	if resp := do(t, srv, "POST", "/machines/"+id+"/start", "", nil); resp.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("start without the nonce: %d, want 412", resp.StatusCode)
	}
	if resp := do(t, srv, "POST", "/machines/"+id+"/start", l.Data.Nonce, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("start with the nonce: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(5 * time.Second)
	for { // the 1s lease expires on its own
		resp := do(t, srv, "POST", "/machines/"+id+"/lease", "", nil)
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an expired lease still excludes")
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
}

func TestRateLimitAnswers429WithRetryAfter(t *testing.T) {
	_, srv, id := newMachine(t, Options{RatePerSecond: 1, Burst: 2})
	codes := []int{}
	for range 3 {
		resp := do(t, srv, "GET", "/machines/"+id, "", nil)
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != http.StatusTooManyRequests {
		t.Fatalf("codes = %v, want two allowed by the burst, then 429", codes)
	}
}
