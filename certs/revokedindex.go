package certs

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// revokedIndex is the set of revoked serials with the expiry of each
// certificate, kept current as revocations happen, so the public list
// (engines poll it every 2 s) is served without parsing every certificate
// ever issued, and a serial leaves it once its certificate has expired (an
// expired certificate is refused anyway).
type revokedIndex struct {
	now func() time.Time

	mu     sync.Mutex           // guards the fields below
	until  map[string]time.Time // serial → its certificate's NotAfter; zero when unknown (kept)
	loaded bool
	read   time.Time // when a shared database was last read whole (see syncShared)
}

// has says whether serial is in the index.
func (ix *revokedIndex) has(serial string) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	_, ok := ix.until[serial]
	return ok
}

// replace makes until the whole index, as read at t.
func (ix *revokedIndex) replace(until map[string]time.Time, t time.Time) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.until, ix.loaded, ix.read = until, true, t
}

// age is how long ago the index was last read whole from a shared
// database.
func (ix *revokedIndex) age() time.Duration {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.now().Sub(ix.read)
}

func newRevokedIndex() *revokedIndex {
	return &revokedIndex{now: time.Now, until: map[string]time.Time{}}
}

// load fills the index from the database once: the revoked serials, and
// each one's certificate for its expiry. Later revocations are added as
// they happen.
func (a *Authority) loadRevoked() error {
	ix := a.revoked
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.loaded {
		return nil
	}
	db, ok := a.auth.GetDatabase().(lister)
	if !ok {
		return fmt.Errorf("revocation index: the CA database cannot be listed")
	}
	entries, err := db.List([]byte("revoked_x509_certs"))
	if err != nil {
		return fmt.Errorf("revocation index: %w", err)
	}
	for _, e := range entries {
		ix.until[string(e.Key)] = a.notAfter(string(e.Key))
	}
	ix.loaded = true
	return nil
}

// notAfter is the expiry of the certificate with serial, or zero when the
// database does not hold it.
func (a *Authority) notAfter(serial string) time.Time {
	if c, err := a.auth.GetDatabase().GetCertificate(serial); err == nil && c != nil {
		return c.NotAfter
	}
	return time.Time{}
}

// revokedNow records that serial was just revoked.
func (a *Authority) revokedNow(serial string) {
	if a.loadRevoked() != nil {
		return // the next load reads it from the database
	}
	until := a.notAfter(serial)
	a.revoked.mu.Lock()
	a.revoked.until[serial] = until
	a.revoked.mu.Unlock()
}

// RevokedSerials lists the revoked certificates that have not yet expired,
// in order, dropping the expired ones from the index.
func (a *Authority) RevokedSerials() ([]string, error) {
	if err := a.loadRevoked(); err != nil {
		return nil, err
	}
	if err := a.staleErr(); err != nil {
		return nil, err
	}
	ix := a.revoked
	ix.mu.Lock()
	defer ix.mu.Unlock()
	now := ix.now()
	out := make([]string, 0, len(ix.until))
	for s, until := range ix.until {
		if !until.IsZero() && now.After(until) {
			delete(ix.until, s)
			continue
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}
