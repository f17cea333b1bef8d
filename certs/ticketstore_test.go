package certs

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"testing"
	"time"
)

// states is n states of one client as crypto/tls lays them out: a head that
// differs (time, secret) before certificates that do not.
func states(n int, certs []byte) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		head := make([]byte, 60)
		rand.Read(head)
		out[i] = append(head, certs...)
	}
	return out
}

func TestTicketStatesComeBackExactlyWhileSharingTheirCertificates(t *testing.T) {
	s := newTicketStore()
	client := sha256.Sum256([]byte("client"))
	chain := bytes.Repeat([]byte("certificate "), 200)
	all := states(10, chain)
	// A state with other certificates (the client's tail changes) and
	// states after it: earlier handles keep their exact bytes.
	all = append(all, states(3, bytes.Repeat([]byte("other "), 300))...)
	handles := make([]ticketHandle, len(all))
	for i, st := range all {
		handles[i] = s.put(client, st)
	}
	for i, h := range handles {
		if got := s.get(h[:]); !bytes.Equal(got, all[i]) {
			t.Fatalf("state %d came back as %d bytes differing from the %d put", i, len(got), len(all[i]))
		}
	}
	// The first ten share one copy of the chain: each handle keeps its head.
	first := s.states[handles[0]].tail
	for i := 1; i < 10; i++ {
		st := s.states[handles[i]]
		if len(st.head) > 64 || &st.tail[len(st.tail)-1] != &first[len(first)-1] {
			t.Fatalf("state %d keeps a %d-byte head and a tail of its own, not the chain shared", i, len(st.head))
		}
	}
}

func TestTicketStoreKeepsTheClientsTicketedLastAndNoOlderThanItsLife(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := newTicketStore()
	s.now = func() time.Time { return now }
	s.maxClients = 2
	a := s.put(sha256.Sum256([]byte("a")), []byte("state a"))
	b := s.put(sha256.Sum256([]byte("b")), []byte("state b"))
	s.put(sha256.Sum256([]byte("a")), []byte("state a2")) // a is ticketed last now
	c := s.put(sha256.Sum256([]byte("c")), []byte("state c"))
	if s.get(b[:]) != nil {
		t.Error("the client ticketed longest ago is still kept beyond the bound of 2 clients")
	}
	if s.get(a[:]) == nil || s.get(c[:]) == nil {
		t.Error("a client ticketed recently was forgotten")
	}
	if len(s.clients) != 2 || s.order.Len() != 2 {
		t.Errorf("store holds %d clients (%d in order), want 2", len(s.clients), s.order.Len())
	}

	now = now.Add(s.life + time.Second)
	if s.get(c[:]) != nil {
		t.Error("a ticket past its life still resumes")
	}
	s.put(sha256.Sum256([]byte("d")), []byte("state d"))
	if len(s.states) != 1 {
		t.Errorf("after a put past the others' life the store keeps %d states, want only the new one", len(s.states))
	}
}

func TestTicketStoreIgnoresHandlesItDidNotMake(t *testing.T) {
	s := newTicketStore()
	h := s.put(sha256.Sum256(nil), []byte("not a session state"))
	var unknown [ticketHandleLen]byte
	rand.Read(unknown[:])
	for name, id := range map[string][]byte{
		"empty":              nil,
		"short":              h[:8],
		"long":               append(h[:], 0),
		"unknown":            unknown[:],
		"a state unreadable": h[:],
		"crypto/tls's own":   bytes.Repeat([]byte{0xab}, 2400),
	} {
		ss, err := s.unwrap(id, tls.ConnectionState{})
		if ss != nil || err != nil {
			t.Errorf("%s identity: got (%v, %v), want (nil, nil): a full handshake", name, ss, err)
		}
	}
}
