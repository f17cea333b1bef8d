package certs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smallstep/certificates/api"
)

func TestParseSerialReadsEveryFormOperatorsCopy(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"4660", "4660"},
		{"0004660", "4660"},
		{"0x1234", "4660"},
		{"0X1234", "4660"},
		{"0x00001234", "4660"},
		{"12:34", "4660"},
		{"0:12:34", "4660"},
		{"00:12:34", "4660"},
		{"5E:1A:FF", "6167295"},
		{"5e:1a:ff", "6167295"},
		{" 4660\n", "4660"},
		{"0x" + strings.Repeat("ff", 20), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 160), big.NewInt(1)).String()},
	} {
		got, err := ParseSerial(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSerial(%q) = %q, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestParseSerialRefusesWhatIsNotASerial(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "not a serial number"},
		{"0", "positive"},
		{"0x0", "positive"},
		{"-4660", "not a serial number"},
		{"+4660", "not a serial number"},
		{"1_000", "not a serial number"},
		{"0x", "not a serial number"},
		{"0x12g4", "not a serial number"},
		{"0x-12", "not a serial number"},
		{"12::34", "not a serial number"},
		{"12:", "not a serial number"},
		{"123:45", "not a serial number"},
		{"0x12:34", "not a serial number"},
		{"0b101", "not a serial number"},
		{"0o17", "not a serial number"},
		{"--kill", "not a serial number"},
		{"5e1aff", "write 0x5e1aff"}, // bare hex, as 'openssl x509 -serial' prints it
		{strings.Repeat("9", maxSerialLen+1), "too long"},
	} {
		got, err := ParseSerial(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSerial(%q) = %q, %v; want an error containing %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseSerial: whatever ParseSerial accepts, it returns as the decimal
// form of a positive integer, which it reads back unchanged.
func FuzzParseSerial(f *testing.F) {
	for _, s := range []string{"4660", "0004660", "0x1234", "12:34", "5E:1A", "0", "-1", "0x", "1:2:3", "abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSerial(s)
		if err != nil {
			return
		}
		n, ok := new(big.Int).SetString(got, 10)
		if !ok || n.Sign() <= 0 || n.String() != got {
			t.Fatalf("ParseSerial(%q) = %q, not the decimal form of a positive integer", s, got)
		}
		if again, err := ParseSerial(got); err != nil || again != got {
			t.Fatalf("ParseSerial(%q) = %q, %v; want it unchanged", got, again, err)
		}
	})
}

// serialForms spells serial (decimal) as 'certs revoke' accepts it.
func serialForms(serial string) map[string]string {
	n, _ := new(big.Int).SetString(serial, 10)
	var colon []string
	for _, b := range n.Bytes() {
		colon = append(colon, fmt.Sprintf("%02x", b))
	}
	return map[string]string{
		"hex":         "0x" + n.Text(16),
		"colon-hex":   strings.Join(colon, ":"),
		"zero-padded": "000" + serial,
	}
}

// revokedSerials is the public revocation list engines poll.
func revokedSerials(t *testing.T, a *Authority) []string {
	t.Helper()
	got, err := a.RevokedSerials()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestOperatorRevokeReadsEverySerialFormAndRefusesUnknownOnes, in-process
// and through a running gateway's API: a hex or zero-padded serial used to
// be recorded as given, which revoked nothing, and an unknown serial
// "succeeded".
func TestOperatorRevokeReadsEverySerialFormAndRefusesUnknownOnes(t *testing.T) {
	a, url := servedAuthority(t, nil)
	for _, path := range []string{"in-process", "through the API"} {
		t.Run(path, func(t *testing.T) {
			op := &Operator{ca: a.CA(), signer: a, auth: a}
			if path == "through the API" {
				op = &Operator{ca: a.CA(), signer: a, remote: newRemoteAdmin(url, a.CA()), URL: url}
			}
			for form := range serialForms("1") {
				t.Run(form, func(t *testing.T) {
					l, err := op.Issue(t.Context(), Client, "job-"+form, nil, time.Hour)
					if err != nil {
						t.Fatal(err)
					}
					serial := l.Cert.SerialNumber.String()
					rv, err := op.Revoke(t.Context(), serialForms(serial)[form], "test", false)
					if err != nil {
						t.Fatalf("Revoke(%s): %v", serialForms(serial)[form], err)
					}
					if rv.Serial != serial || rv.Identity != "job-"+form {
						t.Errorf("Revoke = %+v, want serial %s of job-%s", rv, serial, form)
					}
					if revoked, err := a.IsRevoked(serial); err != nil || !revoked {
						t.Errorf("IsRevoked(%s) after revoking it as %s = %v, %v; want true", serial, serialForms(serial)[form], revoked, err)
					}
					if !slices.Contains(revokedSerials(t, a), serial) {
						t.Errorf("the revocation list lacks %s", serial)
					}
				})
			}
			t.Run("unknown", func(t *testing.T) {
				before := revokedSerials(t, a)
				recs, err := a.Records()
				if err != nil {
					t.Fatal(err)
				}
				_, err = op.Revoke(t.Context(), "0x1234", "test", false)
				if !errors.Is(err, ErrUnknownSerial) || !strings.Contains(err.Error(), "no certificate with serial 4660 in this CA") {
					t.Fatalf("revoking an unknown serial = %v, want ErrUnknownSerial naming 4660", err)
				}
				if after := revokedSerials(t, a); !slices.Equal(after, before) {
					t.Errorf("the revocation list changed from %v to %v", before, after)
				}
				if again, _ := a.Records(); len(again) != len(recs) {
					t.Errorf("%d records before, %d after", len(recs), len(again))
				}
				if revoked, _ := a.IsRevoked("4660"); revoked {
					t.Errorf("an unknown serial was recorded revoked")
				}
			})
		})
	}
}

// TestRevokeThroughTheAPIReportsTheConnectionsKilled: 'certs revoke --kill'
// used to print nothing of what it closed.
func TestRevokeThroughTheAPIReportsTheConnectionsKilled(t *testing.T) {
	a, url := servedAuthority(t, nil)
	var mu sync.Mutex
	var killed []string // guarded by mu: the hook runs on the API's goroutines
	a.OnKill(func(serial string) int {
		mu.Lock()
		defer mu.Unlock()
		killed = append(killed, serial)
		return 3
	})
	remote := newRemoteAdmin(url, a.CA())
	for _, kill := range []bool{false, true} {
		l, err := a.Issue(t.Context(), Client, "leaver", nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		serial := l.Cert.SerialNumber.String()
		rv, err := remote.revocation(t.Context(), serial, "test", kill)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if kill {
			want = 3
		}
		if rv.Closed != want || rv.Identity != "leaver" || rv.Gateway != url {
			t.Errorf("revocation with kill=%v = %+v, want %d closed connections of leaver at %s", kill, rv, want, url)
		}
		mu.Lock()
		if kill != slices.Contains(killed, serial) {
			t.Errorf("kill=%v, but the hook was called for %v", kill, killed)
		}
		mu.Unlock()
	}
}

// TestAPIRevocationOfAHexSerialIsIndexedByItsDecimalForm: smallstep's
// handler reads "0x…" serials and records the decimal form; the revocation
// list (and the kill) used the serial as sent.
func TestAPIRevocationOfAHexSerialIsIndexedByItsDecimalForm(t *testing.T) {
	a, url := servedAuthority(t, nil)
	l, err := a.Issue(t.Context(), Client, "job", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serial := l.Cert.SerialNumber.String()
	revokedSerials(t, a) // the index is loaded before the revocation
	// The hook runs on the API's goroutine.
	var killed atomic.Pointer[string]
	a.OnKill(func(s string) int { killed.Store(&s); return 1 })
	tok, err := a.CA().Clients.Token(serial, nil, time.Minute) // smallstep compares the decimal form with the subject
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(api.RevokeRequest{Serial: "0x" + l.Cert.SerialNumber.Text(16), OTT: tok, Passive: true})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/1.0/revoke", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(killHeader, "1")
	resp, err := apiClient(a).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out revokeResponse
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK || out.Status != "ok" || out.Closed == nil || *out.Closed != 1 {
		t.Fatalf("revoke = %s %+v, want 200, status ok and 1 closed connection", resp.Status, out)
	}
	if got := revokedSerials(t, a); !slices.Contains(got, serial) {
		t.Errorf("revocation list = %v, want %s", got, serial)
	}
	if k := killed.Load(); k == nil || *k != serial {
		t.Errorf("kill asked for %v, want %s", k, serial)
	}
}

// TestAPIDoesNotSayWhetherASerialExistsWithoutAProvisionerToken: the 404
// for an unknown serial is only for holders of the CA's keys.
func TestAPIDoesNotSayWhetherASerialExistsWithoutAProvisionerToken(t *testing.T) {
	a, url := servedAuthority(t, nil)
	other, err := Init(t.TempDir(), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := other.Clients.Token("4660", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(api.RevokeRequest{Serial: "4660", OTT: tok, Passive: true})
	resp, err := apiClient(a).Post(url+"/1.0/revoke", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusOK {
		t.Fatalf("revoke with a foreign token = %s, want smallstep's refusal", resp.Status)
	}
}
