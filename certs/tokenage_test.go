package certs

import (
	"testing"
	"time"
)

// A token minted before the authority started (a CI secret made before a
// gateway's restart) is good until its own expiry: spent tokens are in
// the database, so smallstep's stopgap refusal of older tokens would only
// break jobs across every restart and rolling deploy.
func TestATokenMintedBeforeTheAuthorityStartedIsAccepted(t *testing.T) {
	c, err := Init(t.TempDir(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := c.Clients.tokenFor("ci-job", nil, now.Add(-time.Minute), now.Add(5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.OpenAuthority(AuthorityConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, csr := clientRequest(t, c, "ci-job")
	if _, err := a.Sign(t.Context(), csr, tok, time.Hour); err != nil {
		t.Fatalf("a token minted a minute before the authority started was refused: %v", err)
	}
}
