package engine

import "crypto/tls"

// addrSessions is the gateway's TLS session cache seen from one engine
// address. crypto/tls keys sessions by server name, and engines share one
// (loopback, a Fly private IP) while each has its own ticket keys: keyed by
// address, each engine is offered only its own tickets.
type addrSessions struct {
	cache tls.ClientSessionCache
	addr  string
}

// sessionsFor scopes cache to addr; nil stays nil (no resumption).
func sessionsFor(cache tls.ClientSessionCache, addr string) tls.ClientSessionCache {
	if cache == nil {
		return nil
	}
	return addrSessions{cache, addr}
}

func (s addrSessions) Get(string) (*tls.ClientSessionState, bool) { return s.cache.Get(s.addr) }
func (s addrSessions) Put(_ string, cs *tls.ClientSessionState)   { s.cache.Put(s.addr, cs) }
