package certs

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// On a shared database (several gateways), what one gateway revokes the
// others must enforce: each checks the database itself at every handshake
// (IsRevoked), reads the whole revocation list every revocationSyncEvery
// (the public list it serves engines, and what handshakes fall back on
// while the database is unreachable, for at most the staleness bound), and
// reads the kills other gateways recorded, closing those certificates'
// connections here too.

var (
	revokedTable = []byte("revoked_x509_certs") // smallstep's
	// killsTable holds the serials an operator asked to cut off (revoke
	// --kill), with their certificates' expiry, for every gateway to close
	// their connections. A row goes once its certificate has expired.
	killsTable = []byte("wakegate_kills")
)

// revocationSyncEvery is how often a gateway on a shared database reads
// the revocation list and the kills.
const revocationSyncEvery = time.Second

// DefaultRevocationStaleness is how long, by default, handshakes go on
// being judged by the last revocation list read while the shared database
// cannot be reached; past it they are refused.
const DefaultRevocationStaleness = 60 * time.Second

// killEntry is a row of killsTable.
type killEntry struct {
	Until time.Time `json:"until"` // the certificate's NotAfter; zero when unknown
}

// killsSeen are the kills this process has carried out.
type killsSeen struct {
	mu   sync.Mutex
	seen map[string]bool
}

// first marks serial seen and says whether it was new.
func (k *killsSeen) first(serial string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.seen[serial] {
		return false
	}
	k.seen[serial] = true
	return true
}

// keep forgets the serials not in rows.
func (k *killsSeen) keep(rows map[string][]byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for s := range k.seen {
		if _, ok := rows[s]; !ok {
			delete(k.seen, s)
		}
	}
}

// startSync reads the shared database once (so that the index is whole
// before any handshake), then every revocationSyncEvery until Close.
func (a *Authority) startSync() error {
	if err := a.syncShared(context.Background()); err != nil {
		return fmt.Errorf("read the revocation list: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stopBackground = append(a.stopBackground, cancel)
	a.background.Add(1)
	go func() {
		defer a.background.Done()
		t := time.NewTicker(revocationSyncEvery)
		defer t.Stop()
		var down time.Time // when reads began failing; zero while they work
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			err := a.syncShared(ctx)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil && down.IsZero():
				down = time.Now()
				a.log.Warn("CA database unreachable: new certificates cannot be issued; handshakes are judged by the last revocation list read until it is older than the staleness bound, then refused",
					"err", err, "staleness", a.staleness.String())
			case err == nil && !down.IsZero():
				a.log.Info("CA database reachable again", "down_for", time.Since(down).Round(time.Second).String())
				down = time.Time{}
			}
		}
	}()
	return nil
}

// syncShared reads the revocation list and the kills from the shared
// database: the list replaces the index; a kill not yet carried out here
// closes that certificate's connections.
func (a *Authority) syncShared(ctx context.Context) error {
	began := a.revoked.now()
	rows, err := a.shared.list(ctx, revokedTable)
	if err != nil {
		return err
	}
	kills, err := a.shared.list(ctx, killsTable)
	if err != nil {
		return err
	}
	until := make(map[string]time.Time, len(rows))
	for serial, v := range rows {
		var info struct{ ExpiresAt time.Time }
		json.Unmarshal(v, &info)
		if !info.ExpiresAt.IsZero() && began.After(info.ExpiresAt) {
			continue // expired: refused anyway
		}
		until[serial] = info.ExpiresAt
	}
	a.revoked.replace(until, began)
	a.kills.keep(kills)
	for serial, v := range kills {
		var k killEntry
		json.Unmarshal(v, &k)
		if !k.Until.IsZero() && began.After(k.Until) {
			a.shared.Del(killsTable, []byte(serial)) // any gateway may tidy; a failure is retried next time
			continue
		}
		if !a.kills.first(serial) {
			continue
		}
		if kill := a.onKill.Load(); kill != nil {
			if n := (*kill)(serial); n > 0 {
				a.log.Info("closed the connections of a certificate revoked with --kill elsewhere", "serial", serial, "closed", n)
			}
		}
	}
	return nil
}

// recordKill asks every gateway on a shared database to close serial's
// connections (this one has closed its own). With the embedded database
// there are no others.
func (a *Authority) recordKill(serial string) error {
	if a.shared == nil {
		return nil
	}
	a.kills.first(serial)
	data, _ := json.Marshal(killEntry{Until: a.notAfter(serial)})
	if err := a.shared.Set(killsTable, []byte(serial), data); err != nil {
		return fmt.Errorf("record the kill of %s for the other gateways: %w", serial, err)
	}
	return nil
}

// staleErr says why the revocation index may not be trusted: on a shared
// database it was last read longer ago than the staleness bound.
func (a *Authority) staleErr() error {
	if a.shared == nil {
		return nil
	}
	if age := a.revoked.age(); age > a.staleness {
		return fmt.Errorf("the CA database has been unreachable for about %s: the last revocation list read is older than the staleness bound (%s); refusing until it answers again",
			age.Round(time.Second), a.staleness)
	}
	return nil
}

// isRevokedShared asks the shared database whether serial is revoked. When
// the database does not answer, the last list read decides — while it is
// within the staleness bound, or always when not bounded; past the bound a
// bounded check fails, and so does the handshake (deny by default).
func (a *Authority) isRevokedShared(serial string, bounded bool) (bool, error) {
	if a.revoked.has(serial) {
		return true, nil
	}
	revoked, err := a.shared.has(context.Background(), revokedTable, []byte(serial))
	if err == nil {
		return revoked, nil
	}
	if serr := a.staleErr(); serr != nil && bounded {
		return false, serr
	}
	a.log.Debug("revocation checked against the last list read: the CA database did not answer", "serial", serial, "err", err)
	return false, nil
}

// discardLog is where an authority with no logger logs.
var discardLog = slog.New(slog.DiscardHandler)
