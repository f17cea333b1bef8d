package engine

import (
	"crypto/tls"
	"testing"
	"time"
)

// Engines share a host name; each must be offered only its own tickets.
func TestSessionsAreKeptPerEngineAddress(t *testing.T) {
	shared := tls.NewLRUClientSessionCache(8)
	var seen certTimes
	now := time.Now()
	seen.note("127.0.0.1:1001", now.Add(-time.Minute), now.Add(time.Hour))
	seen.note("127.0.0.1:1002", now.Add(-time.Minute), now.Add(time.Hour))
	a := sessionsFor(shared, "127.0.0.1:1001", &seen)
	b := sessionsFor(shared, "127.0.0.1:1002", &seen)
	s := &tls.ClientSessionState{}
	// crypto/tls asks by server name: the same for both engines.
	a.Put("127.0.0.1", s)
	if got, ok := a.Get("127.0.0.1"); !ok || got != s {
		t.Fatalf("engine a's own session not found")
	}
	if _, ok := b.Get("127.0.0.1"); ok {
		t.Fatal("engine b was offered engine a's session")
	}
	if sessionsFor(nil, "x", &seen) != nil {
		t.Fatal("no cache must stay no cache")
	}
}

// TestSessionsOfAnEngineDueForRenewalAreNotOffered: past two thirds of its
// certificate's life an engine has renewed; offering a ticket made with
// the old certificate would show it again, perhaps as it expires.
func TestSessionsOfAnEngineDueForRenewalAreNotOffered(t *testing.T) {
	cache := tls.NewLRUClientSessionCache(8)
	var seen certTimes
	s := sessionsFor(cache, "127.0.0.1:1001", &seen)
	s.Put("127.0.0.1", &tls.ClientSessionState{})
	if _, ok := s.Get("127.0.0.1"); ok {
		t.Fatal("a session was offered to an engine whose certificate was never seen")
	}
	now := time.Now()
	seen.note("127.0.0.1:1001", now.Add(-5*time.Second), now.Add(25*time.Second)) // a sixth of its life gone
	if _, ok := s.Get("127.0.0.1"); !ok {
		t.Fatal("a session was not offered early in the certificate's life")
	}
	seen.note("127.0.0.1:1001", now.Add(-21*time.Second), now.Add(9*time.Second)) // 70 % of its life gone
	if _, ok := s.Get("127.0.0.1"); ok {
		t.Fatal("a session was offered past two thirds of the engine certificate's life")
	}
}
