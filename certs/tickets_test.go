package certs_test

import (
	"crypto/tls"
	"sync"
	"testing"

	"github.com/wakegate/wakegate/certs"
)

// pinnedSessions is a client's session cache that records every ticket the
// client read and, once pinned, offers the first of them at every
// handshake: a client whose newest ticket is many handshakes old.
type pinnedSessions struct {
	mu     sync.Mutex // guards the fields below
	put    []*tls.ClientSessionState
	pinned bool
}

func (p *pinnedSessions) Get(string) (*tls.ClientSessionState, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.put) == 0 {
		return nil, false
	}
	if p.pinned {
		return p.put[0], true
	}
	return p.put[len(p.put)-1], true
}

func (p *pinnedSessions) Put(_ string, cs *tls.ClientSessionState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cs != nil {
		p.put = append(p.put, cs)
	}
}

func (p *pinnedSessions) pin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pinned = true
}

func (p *pinnedSessions) first(t *testing.T) []byte {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.put) == 0 {
		t.Fatal("the client read no ticket")
	}
	ticket, _, err := p.put[0].ResumptionState()
	if err != nil {
		t.Fatal(err)
	}
	return ticket
}

// ticketedClient is a server's and a client's profile, the client's
// sessions recorded, after a first handshake that gave it a ticket.
func ticketedClient(t *testing.T) (srv, cli *tls.Config, sessions *pinnedSessions) {
	t.Helper()
	p := newParty(t, "Test")
	srv = certs.ServerTLS(fixed(p.server.TLSCertificate()), p.ca.Pool())
	cli = certs.ClientTLS(fixed(p.client.TLSCertificate()), p.ca.Pool(), "localhost")
	sessions = &pinnedSessions{}
	cli.ClientSessionCache = sessions
	if res := handshake(t, srv, cli); res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("first handshake: server %v, client %v", res.serverErr, res.clientErr)
	}
	return srv, cli, sessions
}

func TestATicketIsAShortHandleThatResumesTheSession(t *testing.T) {
	srv, cli, sessions := ticketedClient(t)
	// crypto/tls's own ticket, the state encrypted, is about 2.5 KiB here:
	// the client's certificate chain and its verified chain.
	if ticket := sessions.first(t); len(ticket) != 16 {
		t.Errorf("ticket is %d bytes, want a 16-byte handle", len(ticket))
	}
	res := handshake(t, srv, cli)
	if res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("second handshake: server %v, client %v", res.serverErr, res.clientErr)
	}
	if !res.server.DidResume {
		t.Fatal("the second handshake did not resume the first's session")
	}
	if got := peerName(res.server); got != "ci-job-1" {
		t.Errorf("identity on the resumed connection = %q, want ci-job-1", got)
	}
	if len(res.server.VerifiedChains) == 0 {
		t.Error("the resumed connection has no verified chain")
	}
}

// A client that makes many connections at once resumes them all with the
// ticket it last read, while each of them gets the server to issue a new
// one: the server keeps TicketsPerClient, and a ticket older than that
// gets a full handshake, not an error.
func TestAClientsOlderTicketsResumeUpToTheBound(t *testing.T) {
	srv, cli, sessions := ticketedClient(t)
	sessions.pin()
	// The first ticket is one of TicketsPerClient; each resumption with it
	// issues another, and the last of these evicts it.
	for i := range certs.TicketsPerClient {
		res := handshake(t, srv, cli)
		if res.serverErr != nil || res.clientErr != nil {
			t.Fatalf("handshake %d: server %v, client %v", i, res.serverErr, res.clientErr)
		}
		if !res.server.DidResume {
			t.Fatalf("handshake %d with a ticket %d tickets old was not resumed", i, i+1)
		}
	}
	res := handshake(t, srv, cli)
	if res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("handshake with an evicted ticket failed: server %v, client %v", res.serverErr, res.clientErr)
	}
	if res.server.DidResume {
		t.Errorf("a ticket %d tickets old still resumed: the store keeps more than its bound", certs.TicketsPerClient)
	}
}

func TestATicketFromAnotherServerMakesAFullHandshake(t *testing.T) {
	p := newParty(t, "Test")
	cli := certs.ClientTLS(fixed(p.client.TLSCertificate()), p.ca.Pool(), "localhost")
	first := certs.ServerTLS(fixed(p.server.TLSCertificate()), p.ca.Pool())
	if res := handshake(t, first, cli); res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("first handshake: server %v, client %v", res.serverErr, res.clientErr)
	}
	// A restarted gateway, or another one: same CA and certificate, a store
	// of its own.
	other := certs.ServerTLS(fixed(p.server.TLSCertificate()), p.ca.Pool())
	res := handshake(t, other, cli)
	if res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("handshake with another server's ticket: server %v, client %v", res.serverErr, res.clientErr)
	}
	if res.server.DidResume {
		t.Error("resumed a session this server never kept")
	}
	if res := handshake(t, other, cli); !res.server.DidResume {
		t.Errorf("the next handshake did not resume the new server's session (err %v)", res.serverErr)
	}
}
