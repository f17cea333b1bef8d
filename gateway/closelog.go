package gateway

import (
	"context"
	"log/slog"
	"time"
)

// connEnd is what the one line logged when a client connection closes
// says, beside the identity, remote and key its logger carries: which
// engine served it, how long it was held for one, what it moved each way,
// how long it lasted, and why it ended.
type connEnd struct {
	wake    bool          // a wake request (wire.ProtoWake), not a proxied stream
	engine  string        // "" when no engine served it
	held    time.Duration // waiting for an engine (a wake, a stop to wait out)
	in, out int64         // bytes to the engine, to the client
	reason  string        // client_closed, engine_closed, client_left_while_held, no_engine, ...
	err     error         // what went wrong, if anything did
}

// logClose writes the connection's close line, "connection closed", at
// level: INFO for an ordinary end, WARN or ERROR when something failed.
// Keys are stable (kind=wake, engine, held_ms, bytes_in, bytes_out,
// duration_ms, reason, err); kind is left out for a proxied stream, err
// when nil, engine when none served it.
func logClose(log *slog.Logger, level slog.Level, began time.Time, c connEnd) {
	attrs := make([]slog.Attr, 0, 8)
	if c.wake {
		attrs = append(attrs, slog.String("kind", "wake"))
	}
	if c.engine != "" {
		attrs = append(attrs, slog.String("engine", c.engine))
	}
	attrs = append(attrs, slog.Int64("held_ms", c.held.Milliseconds()),
		slog.Int64("bytes_in", c.in), slog.Int64("bytes_out", c.out),
		slog.Int64("duration_ms", time.Since(began).Milliseconds()), slog.String("reason", c.reason))
	if c.err != nil {
		attrs = append(attrs, slog.String("err", c.err.Error()))
	}
	log.LogAttrs(context.Background(), level, "connection closed", attrs...)
}
