package envoy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// unixScheme prefixes a unix socket path, as 'wakegate connect --listen'
// spells it.
const unixScheme = "unix://"

// socketMode is the mode of a unix socket Envoy listens on: only its user
// may connect, since whoever connects builds as its identity.
const socketMode = 0o600

// parseAddress reads HOST:PORT, tcp://HOST:PORT or unix:///PATH into an
// Envoy address. HOST may be a name: the caller decides whether Envoy must
// resolve it (a DNS cluster) or may not (a listener).
func parseAddress(s string) (*core.Address, error) {
	if path, ok := strings.CutPrefix(s, unixScheme); ok {
		if path == "" || !filepath.IsAbs(path) {
			return nil, errors.New("want unix:///ABSOLUTE/PATH")
		}
		return &core.Address{Address: &core.Address_Pipe{Pipe: &core.Pipe{Path: path}}}, nil
	}
	s = strings.TrimPrefix(s, "tcp://")
	if strings.Contains(s, "://") {
		return nil, errors.New("want HOST:PORT or unix:///PATH")
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("port %q: want 1-65535", portStr)
	}
	if host == "" {
		return nil, errors.New("no host: name an address (0.0.0.0 for every interface)")
	}
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address:       host,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}, nil
}

// parseListen reads a listener address: Envoy binds IP addresses only, and
// a unix socket of mode 0600.
func parseListen(s string) (*core.Address, error) {
	a, err := parseAddress(s)
	if err != nil {
		return nil, err
	}
	if p := a.GetPipe(); p != nil {
		p.Mode = socketMode
		return a, nil
	}
	host := a.GetSocketAddress().GetAddress()
	if _, err := netip.ParseAddr(host); err != nil {
		return nil, fmt.Errorf("Envoy listens on IP addresses, not %q: use 127.0.0.1 (or ::1) for this machine only", host)
	}
	return a, nil
}

// isName reports whether a is a TCP address by host name, which Envoy must
// resolve (a LOGICAL_DNS cluster) rather than take as it is (STATIC).
func isName(a *core.Address) bool {
	sa := a.GetSocketAddress()
	if sa == nil {
		return false
	}
	_, err := netip.ParseAddr(sa.GetAddress())
	return err != nil
}
