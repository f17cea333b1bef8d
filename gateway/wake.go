package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"time"

	"github.com/wakegate/wakegate/wire"
)

// progressWriteTimeout bounds one progress line, so a client that stops
// reading cannot stall the handler.
const progressWriteTimeout = 5 * time.Second

type acquired struct {
	engine *Engine
	lease  *Lease
	err    error
}

// serveWake answers a wake request: progress lines while the engine wakes,
// then a ready line, then the engine is kept awake until the client closes
// the connection.
func (s *Server) serveWake(setup context.Context, tc *tls.Conn, id string, log *slog.Logger, began time.Time) {
	actx, cancel := context.WithCancel(setup)
	defer cancel()
	// Progress names the home engine; if its host cannot take it, the
	// ready line names the engine that served.
	eng := s.cfg.Pool.Route(id)
	result := make(chan acquired, 1)
	go func() {
		e, l, err := s.cfg.Pool.Acquire(actx, id, log)
		result <- acquired{e, l, err}
	}()
	// A wake client sends nothing: its read ends when it leaves, which
	// ends the wait or the hold on its behalf at once.
	left := make(chan struct{})
	go func() {
		defer close(left)
		io.Copy(io.Discard, tc)
	}()
	defer func() {
		tc.SetReadDeadline(time.Unix(1, 0))
		<-left
	}()
	send := func(e wire.Event) bool {
		e.Engine = eng.ID()
		e.Elapsed = time.Since(began)
		tc.SetWriteDeadline(time.Now().Add(progressWriteTimeout))
		return wire.Write(tc, e) == nil
	}

	tick := time.NewTicker(s.cfg.ProgressInterval)
	defer tick.Stop()
	var r acquired
	gone := func() {
		// The client left; stop waiting on its behalf.
		cancel()
		r = <-result
		if r.lease != nil {
			r.lease.Release()
		}
		logClose(log, slog.LevelInfo, began, connEnd{wake: true, held: time.Since(began), reason: "client_left_while_held"})
	}
wait:
	for {
		select {
		case r = <-result:
			break wait
		case <-left:
			gone()
			return
		case <-tick.C:
			if !send(wire.Event{Kind: wire.Waking, State: string(eng.Status().State)}) {
				gone()
				return
			}
		}
	}
	if r.err != nil {
		send(wire.Event{Kind: wire.Failed, Message: r.err.Error()})
		logClose(log, slog.LevelWarn, began, connEnd{wake: true, held: time.Since(began), reason: "no_engine", err: r.err})
		return
	}
	defer r.lease.Release()
	eng = r.engine
	end := connEnd{wake: true, engine: eng.ID(), held: time.Since(began)}
	if !send(wire.Event{Kind: wire.Ready, State: string(Running)}) {
		end.reason = "client_left"
		logClose(log, slog.LevelInfo, began, end)
		return
	}
	log.Debug("wake request ready", "engine", eng.ID(), "wake_ms", end.held.Milliseconds())
	// Hold the engine until the client hangs up (or the gateway shuts down).
	select {
	case <-left:
		end.reason = "client_closed"
	case <-s.ctx.Done():
		end.reason = "cancelled"
	}
	logClose(log, slog.LevelInfo, began, end)
}
