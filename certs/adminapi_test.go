package certs

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func getList(t *testing.T, a *Authority, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+listPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := apiClient(a).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return resp.StatusCode, b.String()
}

// TestListingTheDatabaseNeedsTheOperatorKey: the list used to accept any
// token of the clients provisioner (the key CI tokens are signed with) for
// a magic subject, reusable until it expired.
func TestListingTheDatabaseNeedsTheOperatorKey(t *testing.T) {
	a, url := servedAuthority(t, nil)
	ci, err := a.CA().Clients.Token(listSubject, nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := getList(t, a, url, ci); code != http.StatusUnauthorized {
		t.Fatalf("list with a clients-provisioner token = %d %s, want 401", code, body)
	}
	op, err := a.CA().Admin.Token(listSubject, nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := getList(t, a, url, op); code != http.StatusOK {
		t.Fatalf("list with an operator token = %d %s, want 200", code, body)
	}
	if code, body := getList(t, a, url, op); code != http.StatusUnauthorized || !strings.Contains(body, "already used") {
		t.Fatalf("the same operator token again = %d %s, want 401 (already used)", code, body)
	}
}

// TestACAWithoutAnOperatorKeyGetsOneOnLoad: CAs made before the operator
// key existed keep working.
func TestACAWithoutAnOperatorKeyGetsOneOnLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, "old", []byte("pw")); err != nil {
		t.Fatal(err)
	}
	path := provisionerPath(dir, operatorKey)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	ca, err := Load(dir, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("operator key after load: %v, mode %v; want 0600", err, fi.Mode())
	}
	again, err := Load(dir, []byte("pw"))
	if err != nil || again.Admin.Public().KeyID != ca.Admin.Public().KeyID {
		t.Fatalf("reloading gave another operator key (%v)", err)
	}
}
