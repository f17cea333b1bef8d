package flytest

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	fly "github.com/superfly/fly-go"
)

// Leases, as Fly serves them
// (https://fly.io/docs/machines/api/machines-resource/#create-a-machine-lease):
// one holder at a time, for a TTL; the nonce goes in the
// fly-machine-lease-nonce header of every call on the machine. A second
// acquire while it is held is 409, and so is a mutation without the
// holder's nonce ("machine ID … lease currently held by …", 409:
// https://community.fly.io/t/409-conflict-error-from-machines-api/15555).
// A POST /lease carrying the current nonce refreshes it and keeps the same
// nonce (flyctl internal/machine/leasable_machine.go RefreshLease refuses a
// new one); releasing an absent lease is "lease not found" (flyctl
// internal/machine/lease.go).

const nonceHeader = "fly-machine-lease-nonce"

// activeLeaseLocked returns the unexpired lease, forgetting an expired one.
func (m *machine) activeLeaseLocked() *fly.MachineLeaseData {
	if m.lease != nil && !time.Now().Before(m.leaseUntil) {
		m.lease = nil
	}
	return m.lease
}

func heldBy(m *machine) string {
	return fmt.Sprintf("machine ID %s lease currently held by %s, expires at %s", m.m.ID, m.lease.Owner,
		m.leaseUntil.UTC().Format(time.RFC3339))
}

// leaseOK enforces a held lease on a mutation: it needs the holder's
// nonce; a nonce that matches no lease (it expired, or was released) is
// stale, and refused like a conflict.
func (e *Emulator) leaseOK(w http.ResponseWriter, r *http.Request, m *machine) bool {
	nonce := r.Header.Get(nonceHeader)
	l := m.activeLeaseLocked()
	switch {
	case l != nil && nonce == l.Nonce:
		return true
	case l != nil:
		apiError(w, http.StatusConflict, heldBy(m))
		return false
	case nonce != "":
		apiError(w, http.StatusConflict, fmt.Sprintf("machine ID %s has no lease with that nonce: it expired or was released", m.m.ID))
		return false
	}
	return true
}

func (e *Emulator) acquireLease(w http.ResponseWriter, r *http.Request, a *app) {
	ttl, _ := strconv.Atoi(r.URL.Query().Get("ttl"))
	if ttl <= 0 {
		ttl = 30
	}
	e.withMachine(w, r, a, func(m *machine) {
		now := time.Now()
		nonce := r.Header.Get(nonceHeader)
		l := m.activeLeaseLocked()
		switch {
		case l != nil && nonce == l.Nonce:
			// A refresh: a later expiry, the same nonce.
		case l != nil:
			apiError(w, http.StatusConflict, heldBy(m))
			return
		case nonce != "":
			apiError(w, http.StatusConflict, fmt.Sprintf("machine ID %s has no lease with that nonce to refresh: it expired or was released", m.m.ID))
			return
		default:
			m.lease = &fly.MachineLeaseData{Nonce: newID(8), Owner: "token-holder"}
		}
		m.leaseUntil = now.Add(time.Duration(ttl) * time.Second)
		m.lease.ExpiresAt = m.leaseUntil.Unix()
		m.lease.Version = m.m.InstanceID
		d := *m.lease
		writeJSON(w, fly.MachineLease{Status: "success", Data: &d})
	})
}

func (e *Emulator) releaseLease(w http.ResponseWriter, r *http.Request, a *app) {
	e.withMachine(w, r, a, func(m *machine) {
		l := m.activeLeaseLocked()
		switch {
		case l == nil:
			apiError(w, http.StatusNotFound, "lease not found")
		case r.Header.Get(nonceHeader) != l.Nonce:
			apiError(w, http.StatusConflict, heldBy(m))
		default:
			m.lease = nil
			w.WriteHeader(http.StatusOK)
		}
	})
}
