package certs

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"sort"
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

// Revoke marks serial (decimal) revoked in the CA's database, authorized by
// a token of the clients provisioner, as the API's /revoke does. Gateways
// and engines refuse the certificate at their next handshake.
func (a *Authority) Revoke(ctx context.Context, serial, reason string) error {
	tok, err := a.ca.Clients.Token(serial, nil, time.Minute)
	if err != nil {
		return err
	}
	ctx = provisioner.NewContextWithMethod(ctx, provisioner.RevokeMethod)
	if _, err := a.auth.Authorize(ctx, tok); err != nil {
		return fmt.Errorf("revoke %s: authorize: %w", serial, err)
	}
	if err := a.auth.Revoke(ctx, &authority.RevokeOptions{Serial: serial, Reason: reason, PassiveOnly: true, OTT: tok}); err != nil {
		return fmt.Errorf("revoke %s: %w", serial, err)
	}
	a.revokedNow(serial)
	return nil
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
