package engine

import (
	"crypto/tls"
	"testing"
)

// Engines share a host name; each must be offered only its own tickets.
func TestSessionsAreKeptPerEngineAddress(t *testing.T) {
	shared := tls.NewLRUClientSessionCache(8)
	a := sessionsFor(shared, "127.0.0.1:1001")
	b := sessionsFor(shared, "127.0.0.1:1002")
	s := &tls.ClientSessionState{}
	// crypto/tls asks by server name: the same for both engines.
	a.Put("127.0.0.1", s)
	if got, ok := a.Get("127.0.0.1"); !ok || got != s {
		t.Fatalf("engine a's own session not found")
	}
	if _, ok := b.Get("127.0.0.1"); ok {
		t.Fatal("engine b was offered engine a's session")
	}
	if sessionsFor(nil, "x") != nil {
		t.Fatal("no cache must stay no cache")
	}
}
