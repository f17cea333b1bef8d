package connect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/wakegate/wakegate/wire"
)

// eventTimeout bounds the silence between two wake events; the gateway sends
// one every second while it waits.
const eventTimeout = 30 * time.Second

// ErrRefused marks a failure that retrying cannot fix: the gateway refused
// our certificate, or the gateway's certificate did not verify.
var ErrRefused = errors.New("refused")

// Wake asks the gateway to wake this client's engine and waits until it is
// ready, passing each progress event to progress. It returns the open wake
// connection: while it stays open the gateway keeps the engine awake, so
// close it when the work is done.
func (s *Sidecar) Wake(ctx context.Context, progress func(wire.Event)) (io.Closer, error) {
	c, ep, err := s.dial(ctx, wire.ProtoWake)
	if err != nil {
		return nil, err // classified by dial
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != wire.ProtoWake {
		c.Close()
		return nil, fmt.Errorf("gateway %s does not speak %s (negotiated %q): %w", ep, wire.ProtoWake, p, ErrRefused)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	r := wire.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(eventTimeout))
		e, err := r.Next()
		if err != nil {
			c.Close()
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("gateway %s closed the wake request", ep)
			}
			return nil, classify(fmt.Errorf("wake request to %s: %w", ep, err))
		}
		if progress != nil {
			progress(e)
		}
		switch e.Kind {
		case wire.Ready:
			c.SetReadDeadline(time.Time{})
			return c, nil
		case wire.Failed:
			c.Close()
			return nil, fmt.Errorf("gateway could not wake engine %s: %s", e.Engine, e.Message)
		case wire.Refused:
			c.Close()
			return nil, Refusal("the gateway refused this client: " + e.Message)
		}
	}
}

// WaitReady calls Wake until the engine is ready or ctx ends, retrying
// transient failures (gateway unreachable, wake failed) with backoff from 1 s
// to 10 s. A refusal is returned at once. retrying, if set, hears of each
// failure before the pause.
func (s *Sidecar) WaitReady(ctx context.Context, progress func(wire.Event), retrying func(err error, after time.Duration)) (io.Closer, error) {
	backoff := time.Second
	for {
		hold, err := s.Wake(ctx, progress)
		if err == nil {
			return hold, nil
		}
		if errors.Is(err, ErrRefused) || ctx.Err() != nil {
			return nil, err
		}
		if retrying != nil {
			retrying(err, backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("engine not ready: %w (last error: %v)", context.Cause(ctx), err)
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// classify marks certificate failures as refusals, saying what to fix:
// retrying cannot help them.
func classify(err error) error {
	var verr *tls.CertificateVerificationError
	var oerr *net.OpError
	if !errors.As(err, &verr) {
		if errors.As(err, &oerr) && oerr.Op == "remote error" {
			return fmt.Errorf("%w: the gateway rejected this client's certificate: it has expired or been revoked, or is from another CA (a wake request, 'connect --wait', hears which when the handshake gets through): %w", ErrRefused, err)
		}
		return err
	}
	var host x509.HostnameError
	var auth x509.UnknownAuthorityError
	var inv x509.CertificateInvalidError
	switch {
	case errors.As(err, &host):
		names := host.Certificate.DNSNames
		for _, ip := range host.Certificate.IPAddresses {
			names = append(names, ip.String())
		}
		return fmt.Errorf("%w: the gateway's certificate does not name %q (it names %s): connect with --server-name and one of those names, or start the gateway with --san %s: %w",
			ErrRefused, host.Host, strings.Join(names, ", "), host.Host, err)
	case errors.As(err, &auth):
		return fmt.Errorf("%w: the gateway's certificate is not from this client's CA: check --gateway, and ca.crt or --ca-fingerprint: %w", ErrRefused, err)
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return fmt.Errorf("%w: the gateway's certificate has expired (is the gateway's clock right, and is it renewing?): %w", ErrRefused, err)
	}
	return fmt.Errorf("%w: the gateway's certificate did not verify: %w", ErrRefused, err)
}

// Refusal is the gateway's refusal of this client (its policy), in the
// gateway's own words. It is an ErrRefused.
type Refusal string

func (e Refusal) Error() string        { return string(e) }
func (e Refusal) Is(target error) bool { return target == ErrRefused }
