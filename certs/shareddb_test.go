package certs

import (
	"context"
	"crypto/x509"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"

	"github.com/wakegate/wakegate/internal/pgtest"
)

// sharedPair opens two authorities — two gateways — on one CA directory
// and one PostgreSQL database.
func sharedPair(t *testing.T, staleness time.Duration) (a, b *Authority, pg *pgtest.Server) {
	t.Helper()
	pg = pgtest.Start(t)
	dsn := pg.DSN("wakegate_ca")
	c, err := Init(t.TempDir(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.DB = dsn
	open := func() *Authority {
		x, err := c.OpenAuthority(AuthorityConfig{RevocationStaleness: staleness})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { x.Close() })
		return x
	}
	return open(), open(), pg
}

// clientRequest is a token and a certificate request for a client name.
func clientRequest(t *testing.T, c *CA, name string) (string, *x509.CertificateRequest) {
	t.Helper()
	tok, err := c.Clients.Token(name, []string{name}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509util.CreateCertificateRequest(name, []string{name}, key)
	if err != nil {
		t.Fatal(err)
	}
	return tok, csr
}

func TestASharedDatabaseLetsTwoGatewaysSeeEachOthersTokensCertificatesAndRevocations(t *testing.T) {
	a, b, _ := sharedPair(t, time.Minute)
	ctx := t.Context()

	tok, csr := clientRequest(t, a.CA(), "ci-job")
	chain, err := a.Sign(ctx, csr, tok, time.Hour)
	if err != nil {
		t.Fatalf("sign at the first gateway: %v", err)
	}
	if _, err := b.Sign(ctx, csr, tok, time.Hour); err == nil {
		t.Fatal("a token spent at one gateway was accepted at the other")
	}
	serial := chain[0].SerialNumber.String()
	recs, err := b.Records()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Serial != serial {
		t.Errorf("the other gateway lists %+v, want the one certificate %s", recs, serial)
	}

	var mu sync.Mutex
	var killedAtB []string
	b.OnKill(func(s string) int {
		mu.Lock()
		defer mu.Unlock()
		killedAtB = append(killedAtB, s)
		return 1
	})
	if revoked, err := b.IsRevoked(serial); err != nil || revoked {
		t.Fatalf("before revocation: IsRevoked at the other gateway = %v, %v", revoked, err)
	}
	if _, err := a.revoke(ctx, serial, "left the team"); err != nil {
		t.Fatal(err)
	}
	// The other gateway's next handshake refuses it: no wait.
	if revoked, err := b.IsRevoked(serial); err != nil || !revoked {
		t.Fatalf("right after revocation at one gateway, IsRevoked at the other = %v, %v; want true", revoked, err)
	}
	if err := a.recordKill(serial); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(killedAtB)
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other gateway did not close the killed certificate's connections within 10s (hook calls %d)", n)
		}
		time.Sleep(50 * time.Millisecond) // polling, bounded by the deadline
	}
	serials, err := b.RevokedSerials()
	if err != nil || len(serials) != 1 || serials[0] != serial {
		t.Errorf("the other gateway's revocation list = %v, %v; want [%s]", serials, err, serial)
	}
	// A kill is carried out once per gateway, not at every read.
	seen := time.Now()
	waitFor(t, 10*time.Second, "two more reads of the database", func() bool {
		b.revoked.mu.Lock()
		defer b.revoked.mu.Unlock()
		return b.revoked.read.After(seen.Add(revocationSyncEvery))
	})
	mu.Lock()
	defer mu.Unlock()
	if len(killedAtB) != 1 {
		t.Errorf("the kill was carried out %d times at the other gateway, want once", len(killedAtB))
	}
}

// TestATokenSpentAtTwoGatewaysAtOnceIsSpentOnce: smallstep's PostgreSQL
// driver spends a token with SELECT … FOR UPDATE then an upsert, which
// lets two concurrent spends both succeed.
func TestATokenSpentAtTwoGatewaysAtOnceIsSpentOnce(t *testing.T) {
	a, b, _ := sharedPair(t, time.Minute)
	for round := range 20 {
		tok, csr := clientRequest(t, a.CA(), "racer")
		var wins atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 6 {
			x := a
			if i%2 == 1 {
				x = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if _, err := x.Sign(context.Background(), csr, tok, time.Hour); err == nil {
					wins.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("round %d: one token signed %d certificates across two gateways, want 1", round, n)
		}
	}
}

func TestWhileTheSharedDatabaseIsDownHandshakesUseTheLastListForTheStalenessBound(t *testing.T) {
	const staleness = 3 * time.Second
	a, _, pg := sharedPair(t, staleness)
	ctx := t.Context()
	good, err := a.Issue(ctx, Client, "good", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := a.Issue(ctx, Client, "bad", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	goodSerial, badSerial := good.Cert.SerialNumber.String(), bad.Cert.SerialNumber.String()
	if _, err := a.revoke(ctx, badSerial, "test"); err != nil {
		t.Fatal(err)
	}
	// Let a whole read of the list include the revocation.
	waitFor(t, 10*time.Second, "a read of the list after the revocation", func() bool {
		return a.revoked.age() < revocationSyncEvery/2 && a.revoked.has(badSerial)
	})

	pg.Stop()
	down := time.Now()
	if revoked, err := a.IsRevoked(goodSerial); err != nil || revoked {
		t.Errorf("database down, within the staleness bound: IsRevoked(valid) = %v, %v; want false, nil", revoked, err)
	}
	if revoked, err := a.IsRevoked(badSerial); err != nil || !revoked {
		t.Errorf("database down: IsRevoked(revoked) = %v, %v; want true", revoked, err)
	}
	if _, err := a.Issue(ctx, Client, "newcomer", nil, time.Hour); err == nil {
		t.Error("a certificate was issued with the database down")
	}
	var staleErr error
	waitFor(t, staleness+10*time.Second, "handshakes to be refused past the staleness bound", func() bool {
		_, staleErr = a.IsRevoked(goodSerial)
		return staleErr != nil
	})
	if since := time.Since(down); since < staleness-revocationSyncEvery {
		t.Errorf("handshakes refused %s after the database went down, before the staleness bound %s", since, staleness)
	}
	if !strings.Contains(staleErr.Error(), "unreachable") || !strings.Contains(staleErr.Error(), "staleness") {
		t.Errorf("the refusal says %q; want it to name the unreachable database and the staleness bound", staleErr)
	}
	if _, err := a.RevokedSerials(); err == nil {
		t.Error("the public revocation list was served from a list older than the staleness bound")
	}
	// The gateway's own engines are judged by the last list however old:
	// refusing them would break the connections already carried.
	if revoked, err := a.IsEngineRevoked(goodSerial); err != nil || revoked {
		t.Errorf("past the bound, IsEngineRevoked(valid) = %v, %v; want false, nil", revoked, err)
	}
	if revoked, err := a.IsEngineRevoked(badSerial); err != nil || !revoked {
		t.Errorf("past the bound, IsEngineRevoked(revoked) = %v, %v; want true", revoked, err)
	}

	pg.Start()
	waitFor(t, 30*time.Second, "the gateway to recover by itself", func() bool {
		revoked, err := a.IsRevoked(goodSerial)
		return err == nil && !revoked
	})
	waitFor(t, 30*time.Second, "issuance to work again", func() bool {
		_, err := a.Issue(ctx, Client, "newcomer", nil, time.Hour)
		return err == nil
	})
}

// waitFor polls cond until it holds or the bound passes.
func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", bound, what)
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}
}
