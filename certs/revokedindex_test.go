package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"
)

func revoke(t *testing.T, a *Authority, name string) *Leaf {
	t.Helper()
	l, err := a.Issue(t.Context(), Client, name, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(t.Context(), l.Cert.SerialNumber.String(), "test"); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestRevokedListDropsExpiredCertificates: revoked serials used to stay on
// the list forever; an expired certificate is refused anyway.
func TestRevokedListDropsExpiredCertificates(t *testing.T) {
	a, _ := servedAuthority(t, nil)
	l := revoke(t, a, "job")
	serial := l.Cert.SerialNumber.String()
	got, err := a.RevokedSerials()
	if err != nil || !slices.Contains(got, serial) {
		t.Fatalf("revoked list = %v, %v; want %s", got, err, serial)
	}
	a.revoked.now = func() time.Time { return l.Cert.NotAfter.Add(time.Second) }
	if got, _ := a.RevokedSerials(); slices.Contains(got, serial) {
		t.Fatalf("revoked list after the certificate expired = %v, still holds %s", got, serial)
	}
}

// TestRevocationThroughTheAPIIsListedAtOnce: a revocation through the
// public API (as 'certs revoke' against a running gateway) reaches the
// list that engines poll.
func TestRevocationThroughTheAPIIsListedAtOnce(t *testing.T) {
	a, url := servedAuthority(t, nil)
	l, err := a.Issue(t.Context(), Client, "job", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serial := l.Cert.SerialNumber.String()
	if _, err := a.RevokedSerials(); err != nil { // the index is loaded before the revocation
		t.Fatal(err)
	}
	if err := newRemoteAdmin(url, a.CA()).revoke(t.Context(), serial, "test", false); err != nil {
		t.Fatal(err)
	}
	resp, err := apiClient(a).Get(url + revokedPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Serials []string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(body.Serials, serial) {
		t.Fatalf("GET %s = %v, want %s", revokedPath, body.Serials, serial)
	}
}

// TestRevokedIndexIsRebuiltFromTheDatabase: a restarted gateway lists what
// was revoked before.
func TestRevokedIndexIsRebuiltFromTheDatabase(t *testing.T) {
	c, err := Init(t.TempDir(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.OpenAuthority(AuthorityConfig{})
	if err != nil {
		t.Fatal(err)
	}
	serial := revoke(t, a, "job").Cert.SerialNumber.String()
	a.Close()
	if a, err = c.OpenAuthority(AuthorityConfig{}); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if got, err := a.RevokedSerials(); err != nil || !slices.Contains(got, serial) {
		t.Fatalf("revoked list after a restart = %v, %v; want %s", got, err, serial)
	}
}

// BenchmarkRevokedList serves the revocation list with 20,000 certificates
// in the database, 100 of them revoked: from the index, against the
// baseline of scanning every record (what each request used to do).
func BenchmarkRevokedList(b *testing.B) {
	c, err := Init(b.TempDir(), "test", nil)
	if err != nil {
		b.Fatal(err)
	}
	a, err := c.OpenAuthority(AuthorityConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	store := a.auth.GetDatabase().(interface {
		StoreCertificate(*x509.Certificate) error
	})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	for i := range 20_000 {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(1_000_000 + i)), Subject: pkix.Name{CommonName: fmt.Sprint("job-", i)},
			NotBefore: now, NotAfter: now.Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Intermediate, key.Public(), c.signer)
		if err != nil {
			b.Fatal(err)
		}
		crt, _ := x509.ParseCertificate(der)
		if err := store.StoreCertificate(crt); err != nil {
			b.Fatal(err)
		}
		if i%200 == 0 {
			if err := a.Revoke(b.Context(), crt.SerialNumber.String(), "bench"); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("scan-all-records", func(b *testing.B) {
		for b.Loop() {
			recs, err := a.Records()
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, r := range recs {
				if r.Status == "revoked" {
					n++
				}
			}
			if n != 100 {
				b.Fatalf("%d revoked", n)
			}
		}
	})
	b.Run("index", func(b *testing.B) {
		for b.Loop() {
			s, err := a.RevokedSerials()
			if err != nil || len(s) != 100 {
				b.Fatalf("%d revoked, %v", len(s), err)
			}
		}
	})
}
