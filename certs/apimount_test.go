package certs

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAMountedHandlerIsServedBesideTheAPI: a handler mounted while the
// server serves gets its exact path, with its own body limit (a body the
// API would refuse reaches it whole); the CA's API keeps every other path.
func TestAMountedHandlerIsServedBesideTheAPI(t *testing.T) {
	c, err := Init(t.TempDir(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.OpenAuthority(AuthorityConfig{Address: ln.Addr().String(), DNSNames: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	leaf, err := a.Issue(t.Context(), Server, "ca", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := a.NewAPIServer(leaf.TLSCertificate, APILimits{MaxBody: 1024}, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	base := "https://" + ln.Addr().String()
	client := apiClient(a)

	post := func(path string, body string) (int, string) {
		t.Helper()
		resp, err := client.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := post("/github/webhook", "{}"); code != http.StatusNotFound {
		t.Fatalf("before the mount: %d, want 404", code)
	}
	err = srv.Mount("/github/webhook", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		w.Write([]byte("mounted read " + strconv.Itoa(len(b))))
	}))
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 4096)
	if code, body := post("/github/webhook", big); code != http.StatusOK || body != "mounted read 4096" {
		t.Fatalf("mounted: %d %q, want the handler's own answer to the whole body", code, body)
	}
	if code, _ := post("/sign", big); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("the API's own path: %d, want 413 (its limit still applies)", code)
	}
	resp, err := client.Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /health after the mount: %d", resp.StatusCode)
	}
	for _, bad := range []string{"/github/webhook", "/", "/sign", "/1.0/x", "/wakegate/v1/hook", "relative", "/dir/"} {
		if err := srv.Mount(bad, http.NotFoundHandler()); err == nil {
			t.Errorf("Mount(%q) accepted", bad)
		}
	}
}
