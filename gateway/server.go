package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sync"
	"time"

	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/proxy"
	"github.com/wakegate/wakegate/wire"
)

// ErrServerClosed is returned by Serve after Shutdown: the lifecycle's own
// (proxy.ErrServerClosed), which the connect sidecar returns too.
var ErrServerClosed = proxy.ErrServerClosed

// Config configures a Server.
type Config struct {
	// TLS is the server's TLS config; it must require and verify client
	// certificates (certs.ServerTLS). The server sets its ALPN protocols.
	TLS  *tls.Config
	Pool *Pool
	// Dial opens a stream to an engine address (EngineClient.Dial:
	// engine.Client's in production). Required.
	Dial Dialer
	// HandshakeTimeout bounds the TLS handshake, so a slow or silent client
	// cannot hold a slot.
	HandshakeTimeout time.Duration
	// HoldTimeout bounds how long a connection is held for its engine: a
	// stop in progress, a wake, and the dial. Beyond it the connection is
	// closed.
	HoldTimeout time.Duration
	// HalfOpenTimeout reaps a proxied pair after one side finished.
	HalfOpenTimeout time.Duration
	// ProgressInterval is how often a wake request hears of progress.
	ProgressInterval time.Duration
	// Authorize judges each verified client after its handshake (the
	// gateway's policy); nil lets every client of the CA in. A refused
	// wake request hears the error's words; a refused stream is closed.
	Authorize func(identity.Peer) error
	// MaxConnsPerIdentity bounds the connections one identity (a
	// certificate's common name) has open at once, held, proxied and
	// wake requests together; beyond it a connection is refused, so that
	// one client cannot take every descriptor of the gateway, its engines
	// and BuildKit. DefaultMaxConnsPerIdentity when <= 0.
	MaxConnsPerIdentity int
	// DialAhead opens a stream to an engine ahead of need
	// (engine.Client.DialAhead); with EngineAhead > 0, that many are kept
	// open per engine that streams went to lately (enginespares.go).
	DialAhead   AheadDialer
	EngineAhead int
	// EarlyStreams says whether a held client's stream to the engine at
	// addr is dialled (with Dial) as soon as the host gave that address,
	// while the engine starts (early.go; engine.Client.TakesEarlyStreams).
	// Nil: never; the stream is made once the engine is ready.
	EarlyStreams func(addr string) bool
	// AheadIdleTimeout closes a connection made ahead of need
	// (wire.ProtoAhead) that carried no byte for this long;
	// DefaultAheadIdleTimeout when <= 0.
	AheadIdleTimeout time.Duration
	Log              *slog.Logger
	// Clock paces the summaries of refused connections; RealClock when
	// nil.
	Clock Clock
}

// DefaultMaxConnsPerIdentity is Config.MaxConnsPerIdentity's default. A
// BuildKit client opens a handful of connections and 'buildx bake' a few per
// target, so several CI jobs of one identity (all the jobs of a repository,
// for OIDC-enrolled ones) fit well within it; a client that opens hundreds is
// broken or hostile.
const DefaultMaxConnsPerIdentity = 256

func (c *Config) setDefaults() {
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.HoldTimeout <= 0 {
		c.HoldTimeout = 2 * time.Minute
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = time.Second
	}
	if c.MaxConnsPerIdentity <= 0 {
		c.MaxConnsPerIdentity = DefaultMaxConnsPerIdentity
	}
	if c.AheadIdleTimeout <= 0 {
		c.AheadIdleTimeout = DefaultAheadIdleTimeout
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
}

// Server accepts client connections and proxies them to their engines.
type Server struct {
	cfg  Config
	tls  *tls.Config
	life *proxy.Server   // accept loops, handlers, drain and force
	ctx  context.Context // life's: cancelled when Shutdown gives up draining
	// draining is cancelled when Shutdown begins: connections made ahead
	// of need that are still unused end then.
	draining     context.Context
	stopDraining context.CancelFunc
	refusals     *refusalLog
	spares       *engineSpares // nil without Config.EngineAhead
	sparesOnce   sync.Once
	sparesDone   chan struct{} // closed when spares.run returned; nil if it never ran

	mu         sync.Mutex           // guards open and identities
	open       map[*tls.Conn]string // authenticated connections by certificate serial
	identities map[string]int       // authenticated connections per identity
}

// NewServer validates cfg and returns a server.
func NewServer(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.TLS == nil || cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, fmt.Errorf("gateway: TLS config must require and verify client certificates")
	}
	if cfg.Pool == nil {
		return nil, fmt.Errorf("gateway: no engine pool")
	}
	if cfg.Dial == nil {
		return nil, fmt.Errorf("gateway: no engine dialer (engine.Client's Dial)")
	}
	t := cfg.TLS.Clone()
	t.NextProtos = []string{wire.ProtoProxy, wire.ProtoWake, wire.ProtoAhead}
	s := &Server{cfg: cfg, tls: t,
		refusals: newRefusalLog(cfg.Log, cfg.Clock, refusalLogInterval),
		open:     map[*tls.Conn]string{}, identities: map[string]int{}}
	s.life = proxy.NewServer(s.handle, cfg.Log)
	s.ctx = s.life.Context()
	s.draining, s.stopDraining = context.WithCancel(s.ctx)
	if cfg.EngineAhead > 0 && cfg.DialAhead != nil {
		s.spares = newEngineSpares(cfg.EngineAhead, cfg.DialAhead, cfg.Pool.runningAt, cfg.Pool.metrics.engineAhead, cfg.Log)
		prime := s.spares.prime
		cfg.Pool.onStarted.Store(&prime)
	}
	return s, nil
}

// Serve accepts connections on ln until Shutdown, then returns
// ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.runSpares()
	if err := s.life.Serve(ln); !errors.Is(err, ErrServerClosed) {
		return fmt.Errorf("gateway: %w", err)
	}
	return ErrServerClosed
}

// Shutdown stops accepting, lets open connections finish until ctx ends,
// then closes them and waits for their handlers. Engines are not stopped:
// that is the pool's Close. Safe to call twice.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.refusals.close()
	s.stopDraining()
	s.sparesOnce.Do(func() {}) // none made from now on
	if s.sparesDone != nil {
		<-s.sparesDone // it closes the spares it holds
	}
	if err := s.life.Shutdown(ctx); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return nil
}

// handle serves one client connection; ctx is the lifecycle's (s.ctx).
// It returns once a proxied stream has begun: the runtime shrinks a
// goroutine's stack only while less than a quarter of it is in use, and
// this one's, grown by the handshake, would stay at 8 KiB under the copy
// for the connection's life (BenchmarkIdleConnection reports the stacks).
func (s *Server) handle(ctx context.Context, c net.Conn) {
	a := s.admit(ctx, c)
	if a == nil {
		c.Close()
		return
	}
	// end is what follows the connection; a proxied stream runs it from
	// its own goroutines (proxy.Start) once it is over.
	release := s.life.Keep(c)
	end := func() {
		s.release(a)
		c.Close()
		release()
	}
	switch a.proto {
	case wire.ProtoWake:
		s.wake(a)
		end()
	case wire.ProtoAhead:
		if first, ok := s.startAhead(a); ok {
			s.serveProxy(a, first, end)
		} else {
			end()
		}
	default:
		s.serveProxy(a, nil, end)
	}
}

// wake serves a wake request.
func (s *Server) wake(a *admitted) {
	setup, cancel := a.hold()
	defer cancel()
	s.serveWake(setup, a.tc, a.key, a.log, a.began)
	s.cfg.Pool.metrics.conns.WithLabelValues("wake").Inc()
}

// admitted is a client connection past its handshake, judged and counted.
type admitted struct {
	tc     *tls.Conn
	peer   identity.Peer
	key    string // where its sessions are placed
	log    *slog.Logger
	remote string
	began  time.Time
	proto  string // the ALPN protocol it negotiated
	// ctx is the handler's (cancelled when Shutdown stops waiting);
	// deadline bounds the handshake, the wait for the engine and the dial.
	// The context for those is made when one is needed (hold): one kept
	// for the connection's life would cost every idle connection a timer
	// and its registration in ctx.
	ctx      context.Context
	deadline time.Time
}

// hold is the context that bounds a wait for the engine or a dial.
func (a *admitted) hold() (context.Context, context.CancelFunc) {
	return context.WithDeadline(a.ctx, a.deadline)
}

// admit makes the handshake of c, judges its client (revocation in the
// handshake, the policy, the identity's connection limit) and counts it.
// It returns nil when the connection is refused (said in the log).
func (s *Server) admit(ctx context.Context, c net.Conn) *admitted {
	began := time.Now()
	remote := c.RemoteAddr().String()

	// One deadline covers the handshake, the wait for the engine and the
	// dial; the handshake alone has a shorter one.
	deadline := began.Add(s.cfg.HoldTimeout)
	tc := tls.Server(proxy.Gather(c), s.tls)
	hctx, hcancel := context.WithTimeout(ctx, min(s.cfg.HoldTimeout, s.cfg.HandshakeTimeout))
	err := tc.HandshakeContext(hctx)
	hcancel()
	if err != nil {
		// A certificate that chained to the CA yet was refused (revoked) is
		// a client of ours, told apart from the noise of the internet.
		if p, ok := identity.FromConn(tc.ConnectionState()); ok {
			s.cfg.Pool.metrics.refused.WithLabelValues(string(refusedRevoked)).Inc()
			s.refusals.note(refusedRevoked, p.Name, slog.LevelWarn, "connection refused: handshake failed",
				"identity", p.Name, "remote", remote, "err", err)
			return nil
		}
		s.cfg.Pool.metrics.refused.WithLabelValues(string(refusedHandshake)).Inc()
		s.refusals.note(refusedHandshake, "", slog.LevelInfo, "connection refused: handshake failed", "remote", remote, "err", err)
		return nil
	}
	cs := tc.ConnectionState()
	peer, ok := identity.FromConn(cs)
	if !ok || peer.Name == "" {
		// Unreachable with RequireAndVerifyClientCert; deny by default anyway.
		s.cfg.Log.Warn("connection refused: no verified identity", "remote", remote)
		return nil
	}
	id := peer.Name
	if s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(peer); err != nil {
			s.refuse(tc, refusedPolicy, msgRefusedByPolicy, peer, remote, err)
			return nil
		}
	}
	serial := cs.PeerCertificates[0].SerialNumber.String()
	// Counted per identity rather than per affinity key: the identity is
	// the credential one client holds, and what a runaway or hostile client
	// exhausts is its own allowance, not that of the other identities that
	// build the same repository.
	s.mu.Lock()
	if s.identities[id] >= s.cfg.MaxConnsPerIdentity {
		s.mu.Unlock()
		s.refuse(tc, refusedOverLimit, "connection refused: too many connections for the identity", peer, remote,
			fmt.Errorf("identity %s already has %d connections open at the gateway, its limit (--max-conns-per-identity); close some and retry",
				id, s.cfg.MaxConnsPerIdentity))
		return nil
	}
	s.identities[id]++
	s.open[tc] = serial
	s.mu.Unlock()
	s.cfg.Pool.metrics.active.Inc()
	// Sessions are placed by repository when the certificate names one,
	// else by identity.
	key := peer.AffinityKey()
	log := s.cfg.Log.With("identity", id, "remote", remote)
	if key != id {
		log = log.With("key", key)
	}
	return &admitted{tc: tc, peer: peer, key: key, log: log, remote: remote, began: began,
		proto: cs.NegotiatedProtocol, ctx: ctx, deadline: deadline}
}

// release uncounts an admitted connection.
func (s *Server) release(a *admitted) {
	s.cfg.Pool.metrics.active.Dec()
	s.mu.Lock()
	delete(s.open, a.tc)
	if s.identities[a.peer.Name]--; s.identities[a.peer.Name] <= 0 {
		delete(s.identities, a.peer.Name)
	}
	s.mu.Unlock()
}

// Identities is the authenticated connections open per identity.
func (s *Server) Identities() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.identities)
}

// CloseSerial closes every open connection authenticated by the
// certificate with serial (decimal), as after its revocation, and says how
// many there were.
func (s *Server) CloseSerial(serial string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c, sn := range s.open {
		if sn == serial {
			c.NetConn().Close()
			n++
		}
	}
	if n > 0 {
		s.cfg.Log.Warn("closed connections of a revoked certificate", "serial", serial, "connections", n)
	}
	return n
}

// serveProxy proxies a to an engine for its key; first is what was read
// from the client already (a connection made ahead of need's first byte).
// The stream goes on after it returns, on the copy's own goroutines; end
// runs once it is over (at once if it never began).
func (s *Server) serveProxy(a *admitted, first []byte, end func()) {
	st := &proxied{s: s, a: a, end: end, attempt: 1}
	h, ok := st.acquire(first)
	if !ok {
		end()
		return
	}
	if h.stream != nil {
		st.onEarly(h.stream, h.early)
		return
	}
	st.begin(h.early)
}

// proxied is one proxied stream's state around its copy.
type proxied struct {
	s     *Server
	a     *admitted
	end   func() // once the stream is over
	eng   *Engine
	lease *Lease
	res   proxy.Result // the last stream's
	// attempt counts the engines leased for the client; sentAhead is what
	// of its bytes went on this attempt's stream before its copy began
	// (early.go), counted as the client's (int32s: the two take one word,
	// and the struct stays in its size class for the stream's life); held
	// is how long the client was held before this attempt's stream began;
	// onSpare says the stream is on a stream to the engine made ahead of
	// need.
	attempt   int32
	sentAhead int32
	held      time.Duration
	onSpare   bool
}

// acquire holds the client until an engine is leased for it, and returns
// what the client sent meanwhile, first first, and its stream if one was
// dialled while the engine started; false when there is none (said in the
// close line).
func (st *proxied) acquire(first []byte) (held, bool) {
	m := st.s.cfg.Pool.metrics
	m.held.Inc()
	h, err := st.s.acquireHeld(st.a, first)
	m.held.Dec()
	if errors.Is(err, errClientLeft) {
		m.conns.WithLabelValues("client_left").Inc()
		logClose(st.a.log, slog.LevelInfo, st.a.began, connEnd{held: time.Since(st.a.began), reason: "client_left_while_held"})
		return held{}, false
	}
	if err != nil {
		m.conns.WithLabelValues("no_engine").Inc()
		logClose(st.a.log, slog.LevelWarn, st.a.began, connEnd{held: time.Since(st.a.began), reason: "no_engine", err: err})
		return held{}, false
	}
	st.eng, st.lease = h.eng, h.lease
	return h, true
}

// closed ends a stream the engine served: its lease, its bytes and its
// close line.
func (st *proxied) closed(held time.Duration) {
	m, res := st.s.cfg.Pool.metrics, &st.res
	st.lease.Release()
	m.bytes.WithLabelValues(dirToEngine).Add(float64(res.BytesAToB))
	m.bytes.WithLabelValues(dirToClient).Add(float64(res.BytesBToA))
	end := connEnd{engine: st.eng.ID(), held: held, in: res.BytesAToB, out: res.BytesBToA, reason: res.Reason}
	if res.Err != nil {
		m.conns.WithLabelValues("closed_with_error").Inc()
		end.err = res.Err
		logClose(st.a.log, slog.LevelWarn, st.a.began, end)
		return
	}
	m.conns.WithLabelValues("closed").Inc()
	logClose(st.a.log, slog.LevelInfo, st.a.began, end)
}

// again marks the engine that failed before it answered broken and, on a
// first attempt whose bytes were all kept, leases an engine again (woken
// again) for the same client; false ends the stream (said in the close
// line).
func (st *proxied) again(attempt int32, held time.Duration, failed error, replayable bool) bool {
	m, res := st.s.cfg.Pool.metrics, &st.res
	st.lease.Broken()
	st.lease.Release()
	if attempt > 1 || !replayable {
		m.conns.WithLabelValues("engine_unreachable").Inc()
		end := connEnd{engine: st.eng.ID(), held: held, in: res.BytesAToB, out: res.BytesBToA, reason: "engine_unreachable", err: failed}
		logClose(st.a.log.With("addr", st.lease.Addr), slog.LevelError, st.a.began, end)
		return false
	}
	st.a.log.Warn("engine unreachable before it answered; waking it again for this connection", "engine", st.eng.ID(),
		"addr", st.lease.Addr, "err", failed)
	setup, cancel := st.a.hold()
	defer cancel()
	eng, lease, err := st.s.cfg.Pool.Acquire(setup, st.a.key, st.a.log)
	if err != nil {
		m.conns.WithLabelValues("no_engine").Inc()
		logClose(st.a.log, slog.LevelWarn, st.a.began, connEnd{held: time.Since(st.a.began), reason: "no_engine", err: err})
		return false
	}
	st.eng, st.lease = eng, lease
	return true
}

// runSpares starts making streams to engines ahead of need, once, unless
// Shutdown began.
func (s *Server) runSpares() {
	if s.spares == nil {
		return
	}
	s.sparesOnce.Do(func() {
		s.sparesDone = make(chan struct{})
		go func() {
			defer close(s.sparesDone)
			s.spares.run(s.draining)
		}()
	})
}

// begin proxies the client, its held bytes early first, to the engine at
// st.lease.Addr: on a stream made ahead of need if one is open, else
// dialled now. What follows the stream is ended's.
func (st *proxied) begin(early []byte) {
	st.held = time.Since(st.a.began)
	if s := st.s; s.spares != nil {
		if ec := s.spares.take(st.lease.Addr); ec != nil {
			st.onSpare = true
			st.on(ec, early, nil)
			return
		}
	}
	st.dial(early)
}

// onEarly proxies the client on its stream dialled while the engine
// started, early[:es.sent] written on it already. Until the engine's first
// byte it is handled as a stream made ahead of need: found closed, it is
// dialled again with every byte.
func (st *proxied) onEarly(es *earlyStream, early []byte) {
	st.held = time.Since(st.a.began)
	st.onSpare = true
	if st.s.spares != nil {
		st.s.spares.used(es.addr)
	}
	// sent is kept apart from early: the replay appends to it.
	st.on(es.conn, early[es.sent:], early[:es.sent:es.sent])
}

// dial proxies the client on a stream to the engine dialled now.
func (st *proxied) dial(early []byte) {
	st.onSpare = false
	setup, cancel := st.a.hold()
	ec, err := st.s.cfg.Dial(setup, st.lease.Addr)
	cancel()
	if err != nil {
		st.ended(dialFailed(err), early, true)
		return
	}
	st.on(ec, early, nil)
}

// ended follows a stream: failed says the engine could not be dialled or
// failed before it answered; then replay is what the client sent (to
// resend to another engine), and replayable whether all of it was kept.
//
// A spare that fails before the engine's first byte is not the engine's
// failure: it may have been closed by an engine process since restarted
// at the same address, or have died idle. The stream is sent again, once,
// on a stream dialled now, and only that one's failure counts. An engine
// found dead before it read anything (its address refuses the dial, or it
// fails before its first byte) is marked broken and woken again, once,
// with the same client and its bytes: an engine killed from outside costs
// the next client a wake, not its build.
func (st *proxied) ended(failed error, replay []byte, replayable bool) {
	switch {
	case failed == nil:
		st.closed(st.held)
	case replayable && st.onSpare:
		st.spareFailed(failed)
		st.dial(replay)
		return
	case st.again(st.attempt, st.held, failed, replayable):
		st.attempt++
		st.begin(replay)
		return
	}
	st.end()
}

func (st *proxied) spareFailed(err error) {
	st.s.cfg.Log.Debug("engine connection made ahead failed before the engine answered; dialling it", "addr", st.lease.Addr, "err", err)
}

func dialFailed(err error) error { return fmt.Errorf("engine dial failed: %w", err) }

// on proxies the client, its held bytes early first, on ec, a stream to an
// engine on which sent, the client's bytes before early, went already; it
// returns once the copy has begun. Once the stream is under way (the
// engine's first answer went on to the client, or the stream ended
// first), spares for the engine are made again.
func (st *proxied) on(ec net.Conn, early, sent []byte) {
	fc := &firstContact{tc: st.a.tc, spares: st.s.spares, sent: sent}
	client, engine := fc.pair(&heldConn{Conn: st.a.tc, early: early}, ec)
	st.sentAhead = int32(len(sent)) // at most holdBufferSize
	// The callback is kept for the stream's life: it captures st and fc
	// only.
	proxy.Start(st.s.ctx, client, engine, "client", "engine", st.s.cfg.HalfOpenTimeout, func(res proxy.Result) {
		res.BytesAToB += int64(st.sentAhead)
		st.res = res
		fc.goneUnderway()
		st.ended(fc.outcome())
	})
}

// refuse closes an authenticated connection that the gateway will not
// serve, telling a wake request why in words.
func (s *Server) refuse(tc *tls.Conn, kind refusal, msg string, peer identity.Peer, remote string, err error) {
	attrs := []any{"identity", peer.Name, "remote", remote, "reason", err.Error()}
	if c := peer.OIDC; c != nil {
		attrs = append(attrs, "repository", c.Repository, "ref", c.Ref, "workflow", c.Workflow,
			"environment", c.Environment, "event_name", c.EventName)
	}
	s.cfg.Pool.metrics.refused.WithLabelValues(string(kind)).Inc()
	s.refusals.note(kind, peer.Name, slog.LevelWarn, msg, attrs...)
	if tc.ConnectionState().NegotiatedProtocol == wire.ProtoWake {
		tc.SetWriteDeadline(time.Now().Add(progressWriteTimeout))
		wire.Write(tc, wire.Event{Kind: wire.Refused, Engine: "-", Message: err.Error()})
	}
}
