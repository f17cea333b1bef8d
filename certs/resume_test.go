package certs_test

import (
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// revocations is a switchable revocation list that also records, for each
// handshake the server judged, whether it was a resumption.
type revocations struct {
	mu      sync.Mutex // guards the fields below
	revoked map[string]bool
	judged  []bool // DidResume of each VerifyConnection call
}

func (r *revocations) isRevoked(serial string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revoked[serial], nil
}

func (r *revocations) revoke(serial string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revoked[serial] = true
}

func (r *revocations) lastJudgedResumed() (resumed, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.judged) == 0 {
		return false, false
	}
	return r.judged[len(r.judged)-1], true
}

// serverConfig is the gateway's profile: ServerTLS with RefuseRevoked,
// recording what each VerifyConnection call saw.
func (r *revocations) serverConfig(p party) *tls.Config {
	cfg := certs.RefuseRevoked(certs.ServerTLS(fixed(p.server.TLSCertificate()), p.ca.Pool()), r.isRevoked)
	check := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		r.mu.Lock()
		r.judged = append(r.judged, cs.DidResume)
		r.mu.Unlock()
		return check(cs)
	}
	return cfg
}

func TestResumedHandshakeIsJudgedAgainForRevocation(t *testing.T) {
	p := newParty(t, "Test")
	rev := &revocations{revoked: map[string]bool{}}
	srv := rev.serverConfig(p)
	cli := certs.ClientTLS(fixed(p.client.TLSCertificate()), p.ca.Pool(), "localhost")
	serial := p.client.Cert.SerialNumber.String()

	first := handshake(t, srv, cli)
	if first.serverErr != nil || first.clientErr != nil {
		t.Fatalf("first handshake: server %v, client %v", first.serverErr, first.clientErr)
	}
	if first.server.DidResume {
		t.Fatal("first handshake resumed a session it cannot have")
	}

	second := handshake(t, srv, cli)
	if second.serverErr != nil || second.clientErr != nil {
		t.Fatalf("second handshake: server %v, client %v", second.serverErr, second.clientErr)
	}
	if !second.server.DidResume || !second.client.DidResume {
		t.Fatal("second handshake did not resume the first one's session: no session resumption")
	}
	// What the gateway's handshake-time checks and policy read: the client
	// certificate, restored from the ticket, verified chain included.
	if got := peerName(second.server); got != "ci-job-1" {
		t.Errorf("identity on a resumed connection = %q, want ci-job-1", got)
	}
	if len(second.server.PeerCertificates) == 0 || second.server.PeerCertificates[0].SerialNumber.String() != serial {
		t.Errorf("resumed connection's peer certificate is not the client's")
	}

	rev.revoke(serial)
	third := handshake(t, srv, cli)
	resumed, ok := rev.lastJudgedResumed()
	if !ok || !resumed {
		t.Fatalf("the third handshake was not a resumption (judged %v): the test proves nothing", rev.judged)
	}
	if third.serverErr == nil {
		t.Fatal("a revoked client resumed its session: revocation is not checked on resumed handshakes")
	}
	if want := fmt.Sprintf("certificate %s", serial); !strings.Contains(third.serverErr.Error(), want) || !strings.Contains(third.serverErr.Error(), "revoked") {
		t.Errorf("server error %q, want it to say %s is revoked", third.serverErr, want)
	}
	if third.clientErr == nil {
		t.Error("the revoked client was not told")
	}
}

func TestRenewedClientCertificateIsPresentedAtTheNextHandshake(t *testing.T) {
	p := newParty(t, "Test")
	renewed, err := p.ca.Issue(certs.Client, "ci-job-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rev := &revocations{revoked: map[string]bool{}}
	srv := rev.serverConfig(p)
	var mu sync.Mutex
	current := p.client.TLSCertificate()
	cli := certs.ClientTLS(func() *tls.Certificate { mu.Lock(); defer mu.Unlock(); return current }, p.ca.Pool(), "localhost")

	for i := range 2 {
		if res := handshake(t, srv, cli); res.serverErr != nil || res.clientErr != nil {
			t.Fatalf("handshake %d: server %v, client %v", i, res.serverErr, res.clientErr)
		}
	}
	mu.Lock()
	current = renewed.TLSCertificate()
	mu.Unlock()
	// The old certificate is revoked after the renewal: the client must not
	// keep presenting it through its old session.
	rev.revoke(p.client.Cert.SerialNumber.String())
	res := handshake(t, srv, cli)
	if res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("handshake after renewal: server %v, client %v", res.serverErr, res.clientErr)
	}
	if res.server.DidResume {
		t.Error("resumed a session of the replaced certificate")
	}
	if got := res.server.PeerCertificates[0].SerialNumber; got.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Errorf("server saw serial %s, want the renewed %s", got, renewed.Cert.SerialNumber)
	}
	// And the renewed certificate's sessions resume in turn.
	if res := handshake(t, srv, cli); res.serverErr != nil || !res.server.DidResume {
		t.Errorf("renewed certificate's session: resumed %v, err %v", res.server.DidResume, res.serverErr)
	}
}
