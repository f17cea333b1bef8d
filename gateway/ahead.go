package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/internal/ctxwait"
	"github.com/wakegate/wakegate/wire"
)

// DefaultAheadIdleTimeout is Config.AheadIdleTimeout's default: twice the
// age at which connect retires its spares (connect's aheadMaxAge), so that
// the gateway never closes a spare that connect may still hand to a client.
const DefaultAheadIdleTimeout = time.Minute

// errDraining ends a connection made ahead of need that was still unused when
// the gateway began to shut down.
var errDraining = errors.New("gateway shutting down")

// awaitFirstByte waits for the first byte of a connection made ahead of need
// (wire.ProtoAhead), which is what makes it some engine's client. It returns
// the byte, or why there is none: the client closed it, it stayed unused for
// AheadIdleTimeout, or the gateway began to shut down (an unused spare is
// no drain's business). Nothing is allocated per connection beyond a timer:
// a spare costs its TLS connection and this goroutine only.
func (s *Server) awaitFirstByte(tc *tls.Conn) ([]byte, error) {
	wctx, cancel := context.WithTimeout(s.draining, s.cfg.AheadIdleTimeout)
	defer cancel()
	b, err := ctxwait.ReadByte(wctx, tc)
	switch {
	case err == nil:
		return []byte{b}, nil
	case errors.Is(wctx.Err(), context.DeadlineExceeded):
		return nil, fmt.Errorf("unused for %s", s.cfg.AheadIdleTimeout)
	case wctx.Err() != nil:
		return nil, errDraining
	}
	return nil, fmt.Errorf("closed unused: %w", err)
}

// startAhead takes a connection made ahead of need up to its stream:
// nothing happens until its first byte, and then it is a proxied stream
// like any other, whose hold for an engine starts then. It is judged again
// then, as a new connection would be: a certificate revoked, expired or
// refused by a policy changed since the handshake gets no engine. The
// client hears first whether the stream is served (wire.AheadServed), so
// that one closed unused just as the client began to use it is told apart
// from a stream that ended: its bytes reached no engine, and the client
// sends them again on a new connection. It returns the first byte, or
// false when there is no stream to serve.
func (s *Server) startAhead(a *admitted) ([]byte, bool) {
	tc, peer, log, remote := a.tc, a.peer, a.log, a.remote
	m := s.cfg.Pool.metrics
	m.ahead.Inc()
	first, err := s.awaitFirstByte(tc)
	m.ahead.Dec()
	if err != nil {
		m.conns.WithLabelValues("ahead_unused").Inc()
		log.Debug("connection made ahead closed unused", "reason", err.Error())
		tellAhead(tc, wire.AheadNotServed)
		return nil, false
	}
	if kind, err := s.judgeAgain(tc.ConnectionState(), peer); err != nil {
		s.refuse(tc, kind, refusedAgainMessage[kind], peer, remote, err)
		tellAhead(tc, wire.AheadNotServed)
		return nil, false
	}
	if err := tellAhead(tc, wire.AheadServed); err != nil {
		m.conns.WithLabelValues("client_left").Inc()
		log.Debug("connection made ahead closed at its first byte", "err", err)
		return nil, false
	}
	// The hold's bound starts at the first byte.
	a.began = time.Now()
	a.deadline = a.began.Add(s.cfg.HoldTimeout)
	return first, true
}

// msgRefusedByPolicy is the log's words for a connection the policy
// refuses, at its handshake or, made ahead, at its first byte: operators'
// alerts look for them.
const msgRefusedByPolicy = "connection refused by policy"

// refusedAgainMessage is what the log says of a connection made ahead and
// refused at its first byte: what it says of a new connection refused for
// the same reason.
var refusedAgainMessage = map[refusal]string{
	refusedPolicy:    msgRefusedByPolicy,
	refusedRevoked:   "connection refused: certificate revoked",
	refusedHandshake: "connection refused: certificate expired",
}

// judgeAgain judges a connection's certificate and client as its handshake
// did: the TLS config's own check (revocation), expiry, and the policy.
func (s *Server) judgeAgain(cs tls.ConnectionState, peer identity.Peer) (refusal, error) {
	if leaf := cs.PeerCertificates[0]; time.Now().After(leaf.NotAfter) {
		return refusedHandshake, fmt.Errorf("certificate %s expired at %s", leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if v := s.tls.VerifyConnection; v != nil {
		if err := v(cs); err != nil {
			return refusedRevoked, err
		}
	}
	if s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(peer); err != nil {
			return refusedPolicy, err
		}
	}
	return "", nil
}

// aheadStatusTimeout bounds the write of a spare's status byte: one TLS
// record into an idle connection's socket buffer.
const aheadStatusTimeout = 5 * time.Second

// tellAhead sends a spare's status byte.
func tellAhead(tc *tls.Conn, status byte) error {
	tc.SetWriteDeadline(time.Now().Add(aheadStatusTimeout))
	defer tc.SetWriteDeadline(time.Time{})
	_, err := tc.Write([]byte{status})
	return err
}
