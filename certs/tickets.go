package certs

import (
	"bytes"
	"container/list"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"sync"
	"time"
)

// A wakegate server keeps its TLS 1.3 session states itself and gives each
// client a 16-byte random handle as its ticket, instead of crypto/tls's
// default: the whole state, encrypted, as the ticket. That state holds the
// client's certificate chain and its verified chain (about 2.3 KiB with
// this CA's certificates), and both ends keep what carried it for the
// connection's life: crypto/tls never shrinks a connection's input or
// handshake buffers. A client reading the ticket kept a 4 KiB input
// buffer, and a server reading it back in the next ClientHello kept its
// input buffer and the ClientHello itself (4 + 3.4 KiB), for every idle
// connection at the gateway, at connect and on an engine's front.
//
// A handle is 128 bits from crypto/rand: it is exposed on the wire, so it
// must not be guessable, and it proves nothing by itself (resuming also
// takes the session's secret, which only the client has).
//
// Each handshake gives its client a new ticket, and a client resumes with
// the newest it has read, so a client making many connections at once
// (connect's spares, a burst of a CI job's streams) resumes with tickets a
// few dozen handshakes old: the store keeps ticketsPerClient handles for
// each client certificate. They cost little: the states of one client
// differ only in their first bytes (version, time, secret), so each handle
// keeps that head and shares the rest (the certificates) with the client's
// other handles: about 200 B each with the maps' share, 16 KiB for a
// client's 64. The store also keeps only the ticketClients that received
// a ticket last (16 MB at most), and only for ticketLife. A handle that is
// unknown (a restart, another gateway, evicted) is ignored, and the client
// makes a full handshake.
const (
	ticketHandleLen  = 16
	ticketsPerClient = 64
	ticketClients    = 1024
	ticketLife       = 24 * time.Hour
)

type ticketHandle [ticketHandleLen]byte

// ticketStore is a server's session states by handle. States are kept as
// crypto/tls serializes them (SessionState.Bytes), as its WrapSession
// contract asks.
type ticketStore struct {
	now        func() time.Time
	perClient  int
	maxClients int
	life       time.Duration

	mu      sync.Mutex // guards the fields below
	states  map[ticketHandle]storedTicket
	clients map[[sha256.Size]byte]*list.Element // of order
	order   list.List                           // *clientTickets, the most recently ticketed first
}

// storedTicket is a state as head+tail: the tail is shared with the
// client's other tickets.
type storedTicket struct {
	head, tail []byte
	born       time.Time
}

// clientTickets is one client certificate's handles, a ring of the newest,
// and the tail their states share.
type clientTickets struct {
	key     [sha256.Size]byte
	handles []ticketHandle
	next    int // where the next handle goes once the ring is full
	last    time.Time
	tail    []byte // never written to: handles' tails are slices of it
}

// split gives state's head and the tail it shares with the client's last
// ones. A tail only ever shrinks to a suffix of itself, so earlier tickets
// keep theirs (slices of the same bytes) unchanged.
func (ct *clientTickets) split(state []byte) (head, tail []byte) {
	n := 0
	for n < len(state) && n < len(ct.tail) && state[len(state)-1-n] == ct.tail[len(ct.tail)-1-n] {
		n++
	}
	if n == 0 {
		ct.tail = bytes.Clone(state)
		return nil, ct.tail
	}
	ct.tail = ct.tail[len(ct.tail)-n:]
	return bytes.Clone(state[:len(state)-n]), ct.tail
}

func newTicketStore() *ticketStore {
	return &ticketStore{
		now:        time.Now,
		perClient:  ticketsPerClient,
		maxClients: ticketClients,
		life:       ticketLife,
		states:     map[ticketHandle]storedTicket{},
		clients:    map[[sha256.Size]byte]*list.Element{},
	}
}

// serve makes cfg's tickets handles into this store.
func (s *ticketStore) serve(cfg *tls.Config) {
	cfg.WrapSession = s.wrap
	cfg.UnwrapSession = s.unwrap
}

func (s *ticketStore) wrap(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	state, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	var client []byte
	if len(cs.PeerCertificates) > 0 {
		client = cs.PeerCertificates[0].Raw
	}
	h := s.put(sha256.Sum256(client), state)
	return h[:], nil
}

// unwrap returns (nil, nil) for a handle it does not hold: crypto/tls then
// makes a full handshake.
func (s *ticketStore) unwrap(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	state := s.get(identity)
	if state == nil {
		return nil, nil
	}
	ss, err := tls.ParseSessionState(state)
	if err != nil {
		return nil, nil // not a state this store could have made: no resumption
	}
	return ss, nil
}

func (s *ticketStore) put(client [sha256.Size]byte, state []byte) ticketHandle {
	var h ticketHandle
	rand.Read(h[:]) // never fails (crypto/rand panics rather than return short)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var ct *clientTickets
	if el, ok := s.clients[client]; ok {
		ct = el.Value.(*clientTickets)
		s.order.MoveToFront(el)
	} else {
		ct = &clientTickets{key: client}
		s.clients[client] = s.order.PushFront(ct)
	}
	if len(ct.handles) < s.perClient {
		ct.handles = append(ct.handles, h)
	} else {
		delete(s.states, ct.handles[ct.next])
		ct.handles[ct.next] = h
		ct.next = (ct.next + 1) % s.perClient
	}
	ct.last = now
	head, tail := ct.split(state)
	s.states[h] = storedTicket{head: head, tail: tail, born: now}
	for el := s.order.Back(); el != nil && (s.order.Len() > s.maxClients || now.Sub(el.Value.(*clientTickets).last) > s.life); el = s.order.Back() {
		s.forget(el)
	}
	return h
}

// forget drops a client's handles; s.mu is held.
func (s *ticketStore) forget(el *list.Element) {
	ct := s.order.Remove(el).(*clientTickets)
	for _, h := range ct.handles {
		delete(s.states, h)
	}
	delete(s.clients, ct.key)
}

func (s *ticketStore) get(identity []byte) []byte {
	if len(identity) != ticketHandleLen {
		return nil
	}
	h := ticketHandle(identity)
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.states[h]
	if !ok || s.now().Sub(t.born) > s.life {
		return nil
	}
	return append(append(make([]byte, 0, len(t.head)+len(t.tail)), t.head...), t.tail...)
}
