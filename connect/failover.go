package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wakegate/wakegate/proxy"
)

// failover remembers which gateway address connections go through, so that
// each new connection starts from the last address that worked and a
// rolling restart of the gateways loses no connection.
type failover struct {
	gateways []string // checked by ParseGateways, in the configured order
	lookup   func(context.Context, string) ([]string, error)
	log      *slog.Logger

	mu      sync.Mutex // guards current
	current endpoint   // where the last connection got through; zero before the first
}

// attempt is one address that failed, and why.
type attempt struct {
	ep  endpoint
	err error
}

// order is the configured gateways, starting with the current one's.
func (f *failover) order(cur endpoint) []string {
	i := max(slices.Index(f.gateways, cur.gateway), 0)
	return append(slices.Clone(f.gateways[i:]), f.gateways[:i]...)
}

// dial connects to the first gateway address that completes a TLS
// handshake, from the last one that worked, in the configured order and
// each name's addresses in turn. A failure to reach or resolve one (refused,
// reset, EOF in the handshake as a gateway shuts down, a timeout) moves on
// to the next; a refusal (ErrRefused: a certificate that did not verify, a
// gateway that rejected ours) is returned at once, since another address
// of the same pool would not hide it.
func (f *failover) dial(ctx context.Context, one func(context.Context, endpoint) (*tls.Conn, error)) (*tls.Conn, endpoint, error) {
	f.mu.Lock()
	cur := f.current
	f.mu.Unlock()
	var failed []attempt
	for _, gw := range f.order(cur) {
		eps, err := endpoints(ctx, f.lookup, gw, cur)
		if err != nil {
			if ctx.Err() != nil {
				return nil, endpoint{}, fmt.Errorf("resolve gateway %s: %w", gw, context.Cause(ctx))
			}
			failed = append(failed, attempt{endpoint{gateway: gw, addr: gw}, err})
			continue
		}
		for _, ep := range eps {
			c, err := one(ctx, ep)
			if err == nil {
				f.worked(ep, failed)
				return c, ep, nil
			}
			err = classify(fmt.Errorf("connect to gateway %s: %w", ep, err))
			if errors.Is(err, ErrRefused) {
				return nil, ep, err
			}
			if ctx.Err() != nil {
				return nil, ep, fmt.Errorf("connect to gateway %s: %w", ep, context.Cause(ctx))
			}
			failed = append(failed, attempt{ep, err})
		}
	}
	return nil, endpoint{}, allFailed(failed)
}

// worked makes ep the current address. A change after failures is logged
// once, by the connection that made it.
func (f *failover) worked(ep endpoint, failed []attempt) {
	f.mu.Lock()
	prev := f.current
	f.current = ep
	f.mu.Unlock()
	if prev == ep || len(failed) == 0 {
		return
	}
	f.log.Warn("gateway failover", "from", failed[0].ep.String(), "to", ep.String(), "reason", failed[0].err.Error())
}

// allFailed is one error for every address that failed, on one line,
// wrapping the last failure.
func allFailed(failed []attempt) error {
	switch len(failed) {
	case 0:
		return errors.New("connect to gateway: no address to try")
	case 1:
		return failed[0].err
	}
	msgs := make([]string, len(failed)-1)
	for i, a := range failed[:len(failed)-1] {
		msgs[i] = a.err.Error()
	}
	return fmt.Errorf("every gateway address failed: %s; %w", strings.Join(msgs, "; "), failed[len(failed)-1].err)
}

// dialTLS opens an mTLS connection to ep speaking proto, within timeout. An
// empty ServerName in base means ep's host, as given in --gateway.
func dialTLS(ctx context.Context, base *tls.Config, proto string, timeout time.Duration, ep endpoint) (*tls.Conn, error) {
	cfg := base.Clone()
	cfg.NextProtos = []string{proto}
	if cfg.ServerName == "" {
		cfg.ServerName = ep.host
	}
	dctx, cancel := context.WithTimeout(ctx, timeout) // the dial and the handshake
	defer cancel()
	c, err := proxy.DialTLS(dctx, &net.Dialer{KeepAlive: 30 * time.Second}, ep.addr, cfg)
	if err != nil {
		if ctx.Err() == nil && errors.Is(dctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("no TLS handshake within %s: %w", timeout, err)
		}
		return nil, err
	}
	return c, nil
}
