package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/buildkit/client"

	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/proxy"
	"github.com/wakegate/wakegate/wire"
)

// ProtoStatus is the protocol of status requests (HTTP/1.1): the ALPN name
// on an engine's mTLS port, the opening name on its unix front. Every other
// connection is proxied to BuildKit.
const ProtoStatus = "http/1.1"

// Config configures an engine machine's entrypoint.
type Config struct {
	// Backend is the engine process and its state directory.
	Backend Buildkitd
	// UserConfig is the operator's buildkitd.toml; "" writes one whose GC
	// is bounded by the volume's size.
	UserConfig string
	// TLS is the server side of the mTLS port (certs.ServerTLS).
	TLS *tls.Config
	// Allow lists the gateway names that may connect. A name alone admits
	// no one: the peer's verified certificate must also carry the gateway
	// role (identity.RoleGateway), which only the CA's servers provisioner
	// issues, and server usage, which no client certificate has.
	Allow []string
	// Idle, if positive, makes the engine exit after this long with no
	// connections and no builds in progress.
	Idle time.Duration
	// DrainTimeout bounds how long running builds may finish at shutdown.
	DrainTimeout time.Duration
	// StopTimeout is the engine process's own stop budget after SIGTERM.
	// Dagger's engine gives itself up to 5 minutes; with its clients gone
	// (they are, by then) it writes its clean-shutdown marker within a
	// second and exits within about 16 s.
	StopTimeout time.Duration
	// KillTimeout, if positive, is the host's budget between its SIGTERM
	// and its SIGKILL (Fly's kill_timeout, at most 300 s). The drain is
	// shortened so that drain, stop and a margin fit in it; a
	// StopTimeout that cannot fit is an error.
	KillTimeout time.Duration
	// ReadyTimeout bounds the wait for BuildKit to answer at start.
	ReadyTimeout time.Duration
	// Unix, if set, is a second front on a unix socket (ListenUnix,
	// FrontSocket): the same proxied streams, counted alike, and the same
	// status, without TLS, for a gateway on this machine that runs as this
	// engine's user (the local provider; see unixfront.go). Run serves it
	// beside the mTLS port and closes it, which removes its file.
	Unix net.Listener
	Log  *slog.Logger
}

// Validate judges cfg as New does, all but its TLS config: that comes from
// the enrolment which spends the engine's single-use token, so 'wakegate
// engine' validates everything else first.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

func (c *Config) setDefaults() error {
	if c.TLS == nil || c.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return errors.New("engine: TLS config must require and verify client certificates")
	}
	shortened, err := c.withDefaults()
	if err != nil {
		return err
	}
	if shortened < c.DrainTimeout {
		c.Log.Info("drain shortened to fit the host's kill timeout", "drain_timeout", shortened.String(), "asked", c.DrainTimeout.String(),
			"stop_timeout", c.StopTimeout.String(), "kill_timeout", c.KillTimeout.String(), "margin", killMargin.String())
		c.DrainTimeout = shortened
	}
	return nil
}

// withDefaults fills c's defaults and judges it, TLS apart, and returns
// the drain that fits the host's kill timeout.
func (c *Config) withDefaults() (drain time.Duration, err error) {
	if c.Backend.Dir == "" {
		return 0, errors.New("engine: no state directory")
	}
	if fi, err := os.Stat(c.Backend.Dir); err == nil && !fi.IsDir() {
		return 0, fmt.Errorf("engine: state %s is not a directory", c.Backend.Dir)
	}
	if len(c.Allow) == 0 {
		return 0, errors.New("engine: no client identity is allowed to connect")
	}
	if c.UserConfig != "" {
		fi, err := os.Stat(c.UserConfig)
		if err != nil {
			return 0, fmt.Errorf("engine: buildkitd config: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return 0, fmt.Errorf("engine: buildkitd config %s is not a file", c.UserConfig)
		}
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Minute
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = time.Minute
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = time.Minute
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Backend.Kind == "" {
		c.Backend.Kind = KindBuildkit
	}
	if err := CheckStopBudget(c.Backend.Kind, c.DrainTimeout, c.StopTimeout, c.KillTimeout); err != nil {
		return 0, err
	}
	if c.Backend.Kind == KindDagger {
		if err := CheckDaggerBin(c.Backend.EngineBin); err != nil {
			return 0, fmt.Errorf("engine: %w", err)
		}
		c.Backend.StopTimeout = c.StopTimeout
	}
	return fitKillTimeout(c.DrainTimeout, c.StopTimeout, c.KillTimeout)
}

// Engine runs one engine machine: the engine process on a unix socket in
// its state directory, an mTLS front that admits only the gateway, status
// over HTTP on the same port, idle self-exit, and a clean stop that never
// leaves the cache database half written.
type Engine struct {
	cfg   Config
	tls   *tls.Config
	act   activity     // asks the engine about its work; set before ready
	conns atomic.Int64 // proxied connections open
	ready atomic.Bool
	// readyCh is closed once the engine is ready (after ready is set):
	// the fronts serve from the start, and what arrives before — a
	// gateway's /ready, a proxied stream — waits on it (awaitReady).
	readyCh chan struct{}

	lastBusy atomic.Int64 // unix nanos of the last moment with connections or builds
	// lastStream is when the last counted stream began (unix nanos).
	lastStream atomic.Int64
	// unused ends when the engine begins to stop: streams made ahead of
	// need and still unused close then (ahead.go). Set before the fronts
	// serve.
	unused context.Context
}

// New validates cfg.
func New(cfg Config) (*Engine, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, readyCh: make(chan struct{}), unused: context.Background()}
	t := cfg.TLS.Clone()
	t.NextProtos = []string{wire.ProtoProxy, ProtoStatus, ProtoProxyAhead}
	prev := t.VerifyConnection
	t.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		return admitGateway(cs, cfg.Allow)
	}
	e.tls = t
	return e, nil
}

// admitGateway accepts only the gateway: a verified leaf marked with the
// gateway role and issued for server use, named in allow. Before the role,
// engines admitted by name, and any client certificate an operator issued
// as wakegate-gateway reached BuildKit directly, past the gateway's policy.
func admitGateway(cs tls.ConnectionState, allow []string) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errors.New("peer certificate not verified")
	}
	leaf := cs.VerifiedChains[0][0]
	name := leaf.Subject.CommonName
	if r := identity.Role(leaf); r != identity.RoleGateway {
		return fmt.Errorf("identity %q may not use this engine: its certificate is not the gateway's (role %q)", name, r)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return fmt.Errorf("identity %q may not use this engine: its certificate was not issued for server use", name)
	}
	if !slices.Contains(allow, name) {
		return fmt.Errorf("identity %q may not use this engine", name)
	}
	return nil
}

// Run prepares the state directory, starts the engine process, waits until
// BuildKit answers, then serves ln until ctx ends or the engine has been
// idle for Idle. Either way it stops cleanly: stop accepting, let builds
// finish (bounded), close connections, one SIGTERM, wait for the process.
// It returns nil after a clean stop.
func (e *Engine) Run(ctx context.Context, ln net.Listener) error {
	fronts := []front{{ln, e.openTLS}}
	if e.cfg.Unix != nil {
		fronts = append(fronts, front{e.cfg.Unix, e.openUnix})
	}
	closeFronts := func() {
		for _, f := range fronts {
			f.ln.Close()
		}
	}
	defer closeFronts()
	b := &e.cfg.Backend
	log := e.cfg.Log
	if err := os.MkdirAll(b.Dir, 0o700); err != nil {
		return fmt.Errorf("engine state %s: %w", b.Dir, err)
	}
	// Dagger keeps its cache index in SQLite, not bbolt, and resets a
	// corrupt one itself.
	if b.Kind == KindBuildkit {
		if err := checkCacheDBs(b.Root(), log); err != nil {
			return err
		}
	}
	b.Config = e.cfg.UserConfig
	if b.Config == "" {
		p, err := writeConfig(b.Dir)
		if err != nil {
			return err
		}
		b.Config = p
	}
	if b.Snapshotter == "" && b.Kind == KindBuildkit {
		b.Snapshotter = "native"
		if overlaySupported(b.Dir) {
			b.Snapshotter = "overlayfs"
		}
	}
	p, err := b.Start()
	if err != nil {
		return err
	}
	log.Info("engine process started", "engine_kind", string(b.Kind), "pid", p.Pid(), "state", b.Dir, "snapshotter", b.Snapshotter, "config", b.Config)
	stopProcess := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), e.cfg.StopTimeout)
		defer cancel()
		began := time.Now()
		err := p.Stop(sctx)
		log.Info("engine process stopped", "stop_ms", time.Since(began).Milliseconds(), "err", err)
		return err
	}
	// The fronts serve while the engine process starts: a gateway's
	// readiness probe makes its TLS handshake now, off the wake's critical
	// path, and its GET /ready is answered the moment the engine is ready
	// (awaitReady). Before, connections waited in the backlog until ready
	// and the probe's full handshake (a new process, new session keys)
	// came after it. Proxied streams that arrive early wait for readiness.
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	unused, stopSpares := context.WithCancel(serveCtx)
	defer stopSpares()
	e.unused = unused
	status := newStatusServer(e)
	var wg sync.WaitGroup
	for _, f := range fronts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.accept(serveCtx, f, status)
		}()
	}
	stopFronts := func() {
		closeFronts()
		stopServing()
		status.close()
		wg.Wait()
	}
	if err := e.waitReady(ctx, p); err != nil {
		stopFronts()
		stopProcess()
		return err
	}
	if b.Kind == KindDagger {
		e.act = newDaggerActivity(b.MetricsSocket(), e.conns.Load, log)
	} else {
		// Only now: a gRPC client made before the socket opened would sit
		// out gRPC's reconnect backoff (a second) before its first answer.
		bk, err := client.New(ctx, b.Addr())
		if err != nil {
			stopFronts()
			stopProcess()
			return fmt.Errorf("engine client: %w", err)
		}
		defer bk.Close()
		e.act = &buildkitActivity{c: bk, conns: e.conns.Load, log: log}
	}
	e.markBusy()
	ready := []any{"addr", ln.Addr().String(), "allow", e.cfg.Allow, "idle", e.cfg.Idle.String()}
	if e.cfg.Unix != nil {
		ready = append(ready, "unix", e.cfg.Unix.Addr().String())
	}
	// Logged before the waiters are released, so that a measurement taking
	// this line as the engine's ready moment never credits the engine with
	// what the gateway does after it.
	log.Info("engine ready", ready...)
	e.ready.Store(true)
	close(e.readyCh)

	reason := e.waitForStop(ctx, p)
	log.Info("engine stopping", "reason", reason)
	stopSpares()
	// A BuildKit client holds one connection for its build: stop accepting
	// new ones. A Dagger client opens new connections in the middle of a
	// call (its queries, after its session), so refusing them would fail
	// the very calls the drain waits for: its front keeps accepting until
	// the drain ends, which bounds calls begun meanwhile too.
	if b.Kind != KindDagger {
		closeFronts()
	}
	e.drain()
	stopFronts() // stop accepting, close what is still connected
	return stopProcess()
}

// The engine process is probed after pauses that start short and double up
// to a bound: a fast backend (the echo stand-in starts in a few
// milliseconds) is found ready within about its own start time, not at the
// next tick of a fixed 100 ms interval — which, measured, was most of a
// cold connect's engine start — while a slow one (buildkitd, Dagger's
// engine: a second or more) is asked at most ten times a second, as before.
const (
	firstReadyPause = 2 * time.Millisecond
	maxReadyPause   = 100 * time.Millisecond
)

// nextReadyPause is the pause after one of prev.
func nextReadyPause(prev time.Duration) time.Duration {
	if prev <= 0 {
		return firstReadyPause
	}
	return min(2*prev, maxReadyPause)
}

func (e *Engine) waitReady(ctx context.Context, p *Process) error {
	rctx, cancel := context.WithTimeout(ctx, e.cfg.ReadyTimeout)
	defer cancel()
	var last error
	var pause time.Duration
	for {
		pctx, pcancel := context.WithTimeout(rctx, 5*time.Second)
		last = Probe(pctx, e.cfg.Backend.Addr())
		pcancel()
		if last == nil {
			return nil
		}
		pause = nextReadyPause(pause)
		t := time.NewTimer(pause)
		select {
		case <-p.Exited():
			t.Stop()
			return fmt.Errorf("engine process exited before it was ready (see %s): %v", e.cfg.Backend.LogPath(), p.err)
		case <-rctx.Done():
			t.Stop()
			return fmt.Errorf("engine not ready after %s: %w", e.cfg.ReadyTimeout, last)
		case <-t.C:
		}
	}
}

// awaitReady returns nil once the engine is ready, or an error when ctx
// ends or max passes first (max <= 0: it does not wait).
func (e *Engine) awaitReady(ctx context.Context, max time.Duration) error {
	if e.ready.Load() {
		return nil
	}
	if max <= 0 {
		return errNotReady
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-e.readyCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errNotReady
	}
}

var errNotReady = errors.New("not ready")

func (e *Engine) markBusy() { e.lastBusy.Store(time.Now().UnixNano()) }

// waitForStop returns why the engine should stop: ctx ended (a signal),
// the idle bound passed, or the process died.
func (e *Engine) waitForStop(ctx context.Context, p *Process) string {
	var tick <-chan time.Time
	if e.cfg.Idle > 0 {
		t := time.NewTicker(min(max(e.cfg.Idle/4, 50*time.Millisecond), time.Second))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return "signal"
		case <-p.Exited():
			e.cfg.Log.Error("engine process exited on its own", "err", p.err)
			return "process exited"
		case <-tick:
			if e.busy(ctx) {
				e.markBusy()
				continue
			}
			if idle := time.Since(time.Unix(0, e.lastBusy.Load())); idle >= e.cfg.Idle {
				return fmt.Sprintf("idle for %s", idle.Round(time.Millisecond))
			}
		}
	}
}

// busy says whether any connection is open or any build runs. If the
// engine cannot be asked, it counts as busy: never stop on a guess.
func (e *Engine) busy(ctx context.Context) bool {
	if e.conns.Load() > 0 {
		return true
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := e.act.Builds(qctx)
	if err != nil {
		e.cfg.Log.Warn("cannot ask the engine for work in progress; treating it as busy", "err", err)
		return true
	}
	return n > 0
}

// streamGrace is how long a stream that has just begun counts as work in
// progress for the drain although the engine reports no build: a BuildKit
// client's build is registered at its Solve, after its first requests on
// the stream, and a stream that came as the engine began to stop (another
// gateway stopped it, idle, a moment before) would otherwise be cut after
// the engine had answered it, too late for the gateway to send it to the
// engine woken again.
const streamGrace = 2 * time.Second

// freshStream says whether a stream is open and one began within
// streamGrace.
func (e *Engine) freshStream() bool {
	return e.conns.Load() > 0 && time.Since(time.Unix(0, e.lastStream.Load())) < streamGrace
}

// drain waits, up to DrainTimeout, for builds (Dagger: client sessions) in
// progress to finish, and for streams that have just begun (freshStream).
// An engine that cannot be asked is waited for, but never past the bound:
// every query runs under the drain's own deadline.
func (e *Engine) drain() {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.DrainTimeout)
	defer cancel()
	for {
		qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := e.act.Builds(qctx)
		qcancel()
		fresh := e.freshStream()
		if err == nil && n == 0 && !fresh {
			if waited := time.Since(began); waited > time.Second {
				e.cfg.Log.Info("work in progress finished", "drain_ms", waited.Milliseconds())
			}
			return
		}
		// The count, or why there is none (never err=<nil>).
		work := []any{"builds", n}
		if err != nil {
			work = []any{"err", err}
		}
		if fresh {
			work = append(work, "streams", e.conns.Load())
		}
		if ctx.Err() != nil {
			e.cfg.Log.Warn("work still in progress at the drain bound; stopping anyway", append(work, "drain_timeout", e.cfg.DrainTimeout.String())...)
			return
		}
		e.cfg.Log.Info("waiting for work in progress to finish before stopping", work...)
		t := time.NewTimer(250 * time.Millisecond) // polling the engine, bounded by the drain deadline
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// front is one of the engine's listeners and how a connection accepted
// there is admitted: it returns the connection to serve and the protocol
// it asked for (wire.ProtoProxy, or ProtoStatus).
type front struct {
	ln   net.Listener
	open func(ctx context.Context, c net.Conn) (net.Conn, string, error)
}

func (e *Engine) accept(ctx context.Context, f front, status *statusServer) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := proxy.Accept(f.ln, ctx.Done(), e.cfg.Log)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, proto, err := f.open(ctx, c)
			if err != nil {
				e.cfg.Log.Info("connection refused", "front", f.ln.Addr().Network(), "remote", c.RemoteAddr().String(), "err", err)
				c.Close()
				return
			}
			e.handle(ctx, conn, proto, status)
		}()
	}
}

// openTLS admits an mTLS connection: the handshake (admitGateway), then
// the protocol it negotiated.
func (e *Engine) openTLS(ctx context.Context, c net.Conn) (net.Conn, string, error) {
	tc := tls.Server(proxy.Gather(c), e.tls)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, "", fmt.Errorf("handshake failed: %w", err)
	}
	return tc, tc.ConnectionState().NegotiatedProtocol, nil
}

// dialBackend connects to the engine process's socket for the stream c,
// or closes c and says why in the log.
func (e *Engine) dialBackend(ctx context.Context, c net.Conn) net.Conn {
	var d net.Dialer
	bc, err := d.DialContext(ctx, "unix", e.cfg.Backend.Socket())
	if err != nil {
		e.cfg.Log.Error("connection closed: engine socket unreachable", "err", err)
		c.Close()
		return nil
	}
	return bc
}

// handle serves an admitted connection, from either front: status
// requests, or a stream proxied to the engine process and counted while
// open.
func (e *Engine) handle(ctx context.Context, c net.Conn, proto string, status *statusServer) {
	if proto == ProtoStatus {
		status.serve(c)
		return
	}
	// A stream that came before the engine was ready waits for it, as it
	// waited in the backlog before the fronts served early.
	if err := e.awaitReady(ctx, e.cfg.ReadyTimeout); err != nil {
		c.Close()
		return
	}
	var bc net.Conn
	switch proto {
	case ProtoHandoffAhead:
		e.handOffAhead(ctx, c)
		return
	case ProtoProxyAhead:
		// Its engine process connection is made now too, so that use
		// costs no dial; uncounted until used, then a proxied stream like
		// any other. Unused, both are closed: an engine process stopping
		// gracefully waits for the connections it accepted.
		if bc = e.dialBackend(ctx, c); bc == nil {
			return
		}
		if err := awaitUse(e.unused, c); err != nil {
			bc.Close()
			c.Close()
			return
		}
	}
	defer e.counted()()
	if proto == ProtoHandoff {
		e.handOff(ctx, c)
		return
	}
	if bc == nil {
		if bc = e.dialBackend(ctx, c); bc == nil {
			return
		}
	}
	res := proxy.Join(ctx, c, bc, "gateway", "engine", 0)
	if res.Err != nil {
		e.cfg.Log.Warn("connection closed", "bytes_in", res.BytesAToB, "bytes_out", res.BytesBToA, "err", res.Err)
	}
}
