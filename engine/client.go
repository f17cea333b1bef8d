package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/proxy"
	"github.com/wakegate/wakegate/wire"
)

// Client is the gateway's side of an engine's front: proxied streams,
// readiness and status. Addresses are "tls://host:port", the engine's mTLS
// port, or, for an engine on this machine running as this process's user
// (the local provider's), "unix:///path/front.sock", its unix front
// (unixfront.go): no TLS, no certificate and so no revocation check on
// that hop; the listening process's uid is checked instead.
type Client struct {
	// TLS presents the gateway's identity and trusts the CA root. Engines
	// move between hosts (Fly gives a machine a new address when it
	// migrates), so the engine's certificate is checked against the root
	// and for the server role, not for a host name.
	TLS *tls.Config
	// IsRevoked, if set, is asked about every engine certificate at the
	// handshake (the CA's records; serial in decimal): a revoked engine
	// is refused, and so is one whose lookup fails.
	IsRevoked func(serial string) (bool, error)

	seen  certTimes // each engine's certificate validity by address, for resumption
	names certTimes // the same by the certificate's common name, for EngineCerts
}

// EngineCerts is when the certificate each engine last showed this client
// (in a verified handshake, or, for an engine on its unix front, in the
// headers of its last /ready or /status answer) expires, by its common name
// (identity.EngineName): what the gateway exports as engines' certificate
// expiries.
func (c *Client) EngineCerts() map[string]time.Time {
	c.names.mu.Lock()
	defer c.names.mu.Unlock()
	out := make(map[string]time.Time, len(c.names.m))
	for name, v := range c.names.m {
		out[name] = v[1]
	}
	return out
}

func (c *Client) dial(ctx context.Context, addr, proto string) (net.Conn, error) {
	if path, ok := strings.CutPrefix(addr, UnixScheme); ok {
		return dialUnix(ctx, path, proto)
	}
	hostport, ok := strings.CutPrefix(addr, "tls://")
	if !ok {
		return nil, fmt.Errorf("engine address %q: want tls://host:port or unix:///path", addr)
	}
	cfg := c.TLS.Clone()
	cfg.NextProtos = []string{proto}
	roots := cfg.RootCAs
	// Verified below, by chain and role, instead of by host name.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verifyEngine(cs, roots, c.IsRevoked); err != nil {
			return err
		}
		leaf := cs.PeerCertificates[0]
		c.seen.note(hostport, leaf.NotBefore, leaf.NotAfter)
		c.names.note(leaf.Subject.CommonName, leaf.NotBefore, leaf.NotAfter)
		return nil
	}
	// Resumed sessions are verified above too.
	cfg.ClientSessionCache = sessionsFor(cfg.ClientSessionCache, hostport, &c.seen)
	conn, err := proxy.DialTLS(ctx, &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}, hostport, cfg)
	if err != nil {
		return nil, fmt.Errorf("dial engine %s: %w", hostport, err)
	}
	return conn, nil
}

// TakesEarlyStreams says whether a stream dialled to the engine at addr
// before it is ready is worth dialling then (the gateway's early streams):
// its TLS front holds such a stream until the engine is ready and passes
// it on at once, so its handshake is off the stream's path; its unix front
// hands a stream over only once the engine is ready, so one dialled early
// saves nothing.
func (c *Client) TakesEarlyStreams(addr string) bool { return !strings.HasPrefix(addr, UnixScheme) }

// Dial opens a stream to the engine's BuildKit.
//
// An engine on its unix front hands the stream over (ProtoHandoff): the
// connection returned is the engine process's own socket.
func (c *Client) Dial(ctx context.Context, addr string) (net.Conn, error) {
	if path, ok := strings.CutPrefix(addr, UnixScheme); ok {
		h, err := dialHandoff(ctx, path, ProtoHandoff)
		if err != nil {
			return nil, err // not a nil *handedConn in an interface
		}
		return h, nil
	}
	return c.dial(ctx, addr, wire.ProtoProxy)
}

// get makes one GET on the engine's front (protocol http/1.1) and returns
// the body, at most 1 MiB, if the engine answered 200. The connection is
// already secured (or on a unix socket), so HTTP runs plain over it.
func (c *Client) get(ctx context.Context, addr, path string) ([]byte, error) {
	conn, err := c.dial(ctx, addr, ProtoStatus)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	hc := &http.Client{Transport: &http.Transport{
		DialContext:       func(context.Context, string, string) (net.Conn, error) { return conn, nil },
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://engine"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("engine %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("engine %s: %w", path, err)
	}
	if strings.HasPrefix(addr, UnixScheme) {
		c.noteUnixCert(resp.Header)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("engine %s: %s %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// noteUnixCert records the certificate an engine on its unix front says it
// serves (no handshake shows it there): its expiry, by name, for
// EngineCerts. The peer's uid was checked at the dial.
func (c *Client) noteUnixCert(h http.Header) {
	name := h.Get(headerCertName)
	notAfter, err := time.Parse(time.RFC3339, h.Get(headerCertNotAfter))
	if err != nil || !strings.HasPrefix(name, identity.EngineNamePrefix) {
		return
	}
	c.names.note(name, time.Time{}, notAfter) // only the expiry is read by name
}

// Status asks the engine for its status: connections, builds in progress
// and cache usage (BuildKit queries on the engine's side).
func (c *Client) Status(ctx context.Context, addr string) (Status, error) {
	body, err := c.get(ctx, addr, "/status")
	if err != nil {
		return Status{}, err
	}
	var s Status
	if err := json.Unmarshal(body, &s); err != nil {
		return Status{}, fmt.Errorf("engine status: %w", err)
	}
	return s, nil
}

// Ready succeeds once the engine reports that BuildKit answers. It asks
// /ready, not /status: the gateway probes repeatedly while it wakes an
// engine, and /status runs BuildKit's disk-usage query each time. A
// 'wakegate engine' holds a /ready that comes while it starts and answers
// the moment it is ready (up to 10 s, then 503 and the gateway asks
// again), so the probe's handshake is made during the start and its answer
// waits for no polling interval. The path carries no ?wait=: Envoy in the
// engine role matches /ready exactly and answers at once.
func (c *Client) Ready(ctx context.Context, addr string) error {
	_, err := c.get(ctx, addr, "/ready")
	return err
}

// Busy reports whether anyone uses the engine (connections or builds),
// whichever gateway they came through.
func (c *Client) Busy(ctx context.Context, addr string) (bool, error) {
	s, err := c.Status(ctx, addr)
	if err != nil {
		return false, err
	}
	if !s.Ready {
		return true, fmt.Errorf("engine cannot tell: %s", s.Error)
	}
	return s.Connections > 0 || s.Builds > 0, nil
}

// verifyEngine accepts a peer whose certificate chains to roots, may serve,
// names an engine and, when isRevoked is set, is not revoked.
func verifyEngine(cs tls.ConnectionState, roots *x509.CertPool, isRevoked func(string) (bool, error)) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("engine presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("engine certificate: %w", err)
	}
	if !strings.HasPrefix(leaf.Subject.CommonName, identity.EngineNamePrefix) {
		return fmt.Errorf("peer %q is not an engine", leaf.Subject.CommonName)
	}
	return checkRevoked(leaf, isRevoked)
}

// checkRevoked refuses an engine certificate that isRevoked says is
// revoked, or cannot tell about; nil isRevoked accepts it.
func checkRevoked(leaf *x509.Certificate, isRevoked func(string) (bool, error)) error {
	if isRevoked == nil {
		return nil
	}
	serial := leaf.SerialNumber.String()
	revoked, err := isRevoked(serial)
	if err != nil {
		return fmt.Errorf("engine certificate %s: check revocation: %w", serial, err)
	}
	if revoked {
		return fmt.Errorf("engine certificate %s (%s) is revoked", serial, leaf.Subject.CommonName)
	}
	return nil
}

// stillValid judges again, at a later use, an engine certificate that
// verifyEngine accepted at the handshake: what can have changed since,
// expiry and revocation. Its chain's signatures cannot, and are not
// checked twice on a stream's path.
func stillValid(cs tls.ConnectionState, now time.Time, isRevoked func(string) (bool, error)) error {
	for _, c := range cs.PeerCertificates {
		if now.After(c.NotAfter) {
			return fmt.Errorf("engine certificate %s (%s) expired at %s", c.SerialNumber, c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return checkRevoked(cs.PeerCertificates[0], isRevoked)
}
