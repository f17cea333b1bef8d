package certs

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/nosql/database"
)

// Record is one certificate the CA issued, as 'certs list' shows it.
type Record struct {
	Serial    string    `json:"serial"`
	Identity  string    `json:"identity"`
	NotAfter  time.Time `json:"not_after"`
	Status    string    `json:"status"` // valid, expired or revoked
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// ErrUnknownSerial is returned when asked to revoke a certificate the CA's
// database does not hold.
var ErrUnknownSerial = errors.New("no certificate")

func unknownSerial(serial string) error {
	return fmt.Errorf("%w with serial %s in this CA; see 'wakegate certs list'", ErrUnknownSerial, serial)
}

// maxSerialLen bounds what ParseSerial reads: RFC 5280 serials are at most
// 20 bytes (49 decimal digits, 59 characters as colon-separated hex).
const maxSerialLen = 128

// ParseSerial reads a certificate serial number in the forms an operator
// copies: decimal as 'certs list' prints it (leading zeros allowed), hex
// with 0x, and colon-separated hex bytes as openssl prints them
// ("5e:1a:…"). It returns the serial as the CA's database keys it: the
// decimal form of a positive integer. smallstep looks serials up by that
// exact string, so a revocation of any other spelling would record a
// serial no certificate has. Bare hex is refused, not guessed: "1234" is
// decimal.
func ParseSerial(s string) (string, error) {
	in := strings.TrimSpace(s)
	if len(in) > maxSerialLen {
		return "", fmt.Errorf("serial %.20q…: too long for a serial number", in)
	}
	var digits string
	base := 10
	switch {
	case strings.HasPrefix(in, "0x") || strings.HasPrefix(in, "0X"):
		digits, base = in[2:], 16
		if !isDigits(digits, 16) {
			digits = ""
		}
	case strings.Contains(in, ":"):
		base = 16
		var b strings.Builder
		for g := range strings.SplitSeq(in, ":") {
			if len(g) == 0 || len(g) > 2 || !isDigits(g, 16) {
				b.Reset()
				break
			}
			if len(g) == 1 {
				b.WriteByte('0')
			}
			b.WriteString(g)
		}
		digits = b.String()
	case isDigits(in, 10):
		digits = in
	}
	n, ok := new(big.Int).SetString(digits, base)
	if digits == "" || !ok {
		hint := ""
		if isDigits(in, 16) {
			hint = fmt.Sprintf(" (if it is hex, as 'openssl x509 -serial' prints it, write 0x%s)", in)
		}
		return "", fmt.Errorf("serial %q is not a serial number: give it in decimal as 'wakegate certs list' prints it, in hex as 0x…, or as colon-separated hex bytes%s", s, hint)
	}
	if n.Sign() == 0 {
		return "", fmt.Errorf("serial %q: serial numbers are positive", s)
	}
	return n.String(), nil
}

// isDigits reports whether s is non-empty and only digits of base 10 or 16
// (big.Int.SetString alone would also take a sign and, in base 0,
// underscores and octal).
func isDigits(s string, base int) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case '0' <= c && c <= '9':
		case base == 16 && ('a' <= c && c <= 'f' || 'A' <= c && c <= 'F'):
		default:
			return false
		}
	}
	return true
}

// Revoke marks the certificate with serial (any form ParseSerial reads)
// revoked in the CA's database, authorized by a token of the clients
// provisioner, as the API's /revoke does. Gateways and engines refuse the
// certificate at their next handshake. A serial the database does not hold
// is refused (ErrUnknownSerial): smallstep would record its revocation and
// revoke nothing.
func (a *Authority) Revoke(ctx context.Context, serial, reason string) error {
	_, err := a.revoke(ctx, serial, reason)
	return err
}

// revoke revokes serial and returns the certificate it revoked.
func (a *Authority) revoke(ctx context.Context, serial, reason string) (*x509.Certificate, error) {
	serial, err := ParseSerial(serial)
	if err != nil {
		return nil, err
	}
	cert, err := a.certificate(serial)
	if err != nil {
		return nil, err
	}
	tok, err := a.ca.Clients.Token(serial, nil, time.Minute)
	if err != nil {
		return nil, err
	}
	ctx = provisioner.NewContextWithMethod(ctx, provisioner.RevokeMethod)
	if _, err := a.auth.Authorize(ctx, tok); err != nil {
		return nil, fmt.Errorf("revoke %s: authorize: %w", serial, err)
	}
	if err := a.auth.Revoke(ctx, &authority.RevokeOptions{Serial: serial, Reason: reason, PassiveOnly: true, OTT: tok}); err != nil {
		return nil, fmt.Errorf("revoke %s: %w", serial, err)
	}
	a.revokedNow(serial)
	return cert, nil
}

// certificate is the certificate with serial (decimal) in the CA's
// database, or ErrUnknownSerial.
func (a *Authority) certificate(serial string) (*x509.Certificate, error) {
	cert, err := a.auth.GetDatabase().GetCertificate(serial)
	switch {
	case database.IsErrNotFound(err):
		return nil, unknownSerial(serial)
	case err != nil:
		return nil, fmt.Errorf("look up certificate %s: %w", serial, err)
	}
	return cert, nil
}

type lister interface {
	List(bucket []byte) ([]*database.Entry, error)
}

// Records lists every certificate in the CA's database, newest expiry
// first.
func (a *Authority) Records() ([]Record, error) {
	db, ok := a.auth.GetDatabase().(lister)
	if !ok {
		return nil, fmt.Errorf("list certificates: the CA database cannot be listed")
	}
	revoked := map[string]time.Time{}
	entries, err := db.List([]byte("revoked_x509_certs"))
	if err != nil {
		return nil, fmt.Errorf("list revoked certificates: %w", err)
	}
	for _, e := range entries {
		var info struct {
			RevokedAt time.Time `json:"RevokedAt"`
		}
		json.Unmarshal(e.Value, &info)
		revoked[string(e.Key)] = info.RevokedAt
	}
	if entries, err = db.List([]byte("x509_certs")); err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	now := time.Now()
	var out []Record
	for _, e := range entries {
		c, err := x509.ParseCertificate(e.Value)
		if err != nil {
			continue // not ours to judge: smallstep wrote it
		}
		r := Record{Serial: c.SerialNumber.String(), Identity: c.Subject.CommonName, NotAfter: c.NotAfter, Status: "valid"}
		if at, ok := revoked[r.Serial]; ok {
			r.Status, r.RevokedAt = "revoked", at
		} else if now.After(c.NotAfter) {
			r.Status = "expired"
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NotAfter.After(out[j].NotAfter) })
	return out, nil
}
