package engine

import (
	"crypto/tls"
	"sync"
	"time"
)

// addrSessions is the gateway's TLS session cache seen from one engine
// address. crypto/tls keys sessions by server name, and engines share one
// (loopback, a Fly private IP) while each has its own ticket keys: keyed by
// address, each engine is offered only its own tickets.
//
// It also stops offering an engine's tickets once that engine's
// certificate is due for renewal. The gateway checks engines itself
// (InsecureSkipVerify with verifyEngine), so crypto/tls offers a ticket
// whatever the certificate it was made with has become, and a resumed
// session shows that old certificate again: one offered in the last moment
// of its life fails verifyEngine's check a millisecond later. Past two
// thirds of its life the engine has renewed, and a full handshake gets its
// new certificate.
type addrSessions struct {
	cache tls.ClientSessionCache
	addr  string
	seen  *certTimes
}

// certTimes records, per engine address, the validity of the certificate
// its last verified handshake showed.
type certTimes struct {
	mu sync.Mutex // guards m
	m  map[string][2]time.Time
}

func (t *certTimes) note(addr string, notBefore, notAfter time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string][2]time.Time{}
	}
	t.m[addr] = [2]time.Time{notBefore, notAfter}
}

// resumable says whether the certificate last seen at addr is still
// before two thirds of its life (when its holder renews it).
func (t *certTimes) resumable(addr string, now time.Time) bool {
	t.mu.Lock()
	v, ok := t.m[addr]
	t.mu.Unlock()
	return ok && now.Before(v[0].Add(v[1].Sub(v[0])*2/3))
}

// sessionsFor scopes cache to addr; nil stays nil (no resumption).
func sessionsFor(cache tls.ClientSessionCache, addr string, seen *certTimes) tls.ClientSessionCache {
	if cache == nil {
		return nil
	}
	return addrSessions{cache, addr, seen}
}

func (s addrSessions) Get(string) (*tls.ClientSessionState, bool) {
	if !s.seen.resumable(s.addr, time.Now()) {
		return nil, false
	}
	return s.cache.Get(s.addr)
}

func (s addrSessions) Put(_ string, cs *tls.ClientSessionState) { s.cache.Put(s.addr, cs) }
