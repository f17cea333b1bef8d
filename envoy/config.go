package envoy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Role is which end of wakegate's mTLS an Envoy plays.
type Role string

const (
	// Client is the CI side: plain connections in, mTLS out to the gateway.
	Client Role = "client"
	// Engine is the engine machine's side: mTLS in from the gateway only,
	// plain out to BuildKit's socket.
	Engine Role = "engine"
)

// ParseRole reads a --role value.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case Client, Engine:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want client or engine", s)
}

// DefaultNodeID is the node id of an Envoy in role when none is given.
func DefaultNodeID(r Role) string { return "wakegate-" + string(r) }

// Config is what an Envoy is to do. The same Config yields the static
// bootstrap and the resources the ADS server serves.
type Config struct {
	Role Role
	// NodeID names the Envoy to the xDS server (DefaultNodeID(Role) if
	// empty). Envoy asserts it itself: it identifies, it does not
	// authenticate.
	NodeID string
	// Listen is where Envoy accepts connections: IP:PORT, or unix:///PATH
	// for the client role (a socket of mode 0600).
	Listen string

	// Gateway is the gateway's HOST:PORT (client role).
	Gateway string
	// ServerName is the name the gateway's certificate must carry, sent
	// as SNI (client role; default: the host of Gateway).
	ServerName string

	// Upstream is BuildKit's address on the engine machine (engine role):
	// unix:///PATH, or IP:PORT for an engine serving plain HTTP/2 on
	// loopback.
	Upstream string
}

// FieldError is a mistake in one field of a Config, so that a command can
// name its own flag for it.
type FieldError struct {
	Field string // "listen", "gateway" or "upstream"
	Value string
	Err   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s %q: %v", e.Field, e.Value, e.Err) }
func (e *FieldError) Unwrap() error { return e.Err }

// Validate fills defaults and checks that every address parses, so that
// a mistake is reported before any file is written or socket opened.
func (c *Config) Validate() error {
	if c.NodeID == "" {
		c.NodeID = DefaultNodeID(c.Role)
	}
	switch c.Role {
	case Client:
		if c.Gateway == "" {
			return errors.New("the client role needs the gateway's address (--gateway HOST:PORT)")
		}
		host, port, err := net.SplitHostPort(c.Gateway)
		if err != nil || host == "" || port == "" {
			return &FieldError{"gateway", c.Gateway, errors.New("want HOST:PORT")}
		}
		if c.ServerName == "" {
			c.ServerName = host
		}
		if c.Upstream != "" {
			return errors.New("the client role reaches the gateway, not an upstream: drop --upstream")
		}
	case Engine:
		if c.Upstream == "" {
			return errors.New("the engine role needs BuildKit's address (--upstream unix:///PATH)")
		}
		if _, err := parseAddress(c.Upstream); err != nil {
			return &FieldError{"upstream", c.Upstream, err}
		}
		if c.Gateway != "" || c.ServerName != "" {
			return errors.New("the engine role is dialled by the gateway: drop --gateway and --server-name")
		}
	default:
		return fmt.Errorf("role %q: want client or engine", c.Role)
	}
	if c.Listen == "" {
		return errors.New("Envoy's listener address is required (IP:PORT or unix:///PATH)")
	}
	a, err := parseListen(c.Listen)
	if err != nil {
		return &FieldError{"listen", c.Listen, err}
	}
	if c.Role == Engine && a.GetPipe() != nil {
		return &FieldError{"listen", c.Listen, errors.New("the engine role listens where the gateway can dial it: IP:PORT")}
	}
	return nil
}

// ListenLocalOnly reports whether no other machine can reach Envoy's
// listener: a unix socket, or a loopback IP. Whoever reaches a client-role
// listener builds as its identity.
func (c *Config) ListenLocalOnly() bool {
	if strings.HasPrefix(c.Listen, unixScheme) {
		return true
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// serverNameIsIP reports whether the gateway is named by an IP address:
// then no SNI is sent and the IP must be among the certificate's IP SANs.
func (c *Config) serverNameIsIP() bool {
	_, err := netip.ParseAddr(c.ServerName)
	return err == nil
}
