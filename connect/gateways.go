package connect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// gatewayExample is how an error shows a good --gateway value.
const gatewayExample = "gw1.example.com:8443,gw2.example.com:8443"

// ParseGateways reads the gateway's addresses from values (each a HOST:PORT
// or several joined by commas, as --gateway takes them) in order, without
// duplicates. A host may be a name with several addresses: each is tried in
// turn when connections are made.
func ParseGateways(values []string) ([]string, error) {
	var out []string
	for _, v := range values {
		for _, a := range strings.Split(v, ",") {
			a = strings.TrimSpace(a)
			if err := checkGateway(a); err != nil {
				return nil, err
			}
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no gateway address: want HOST:PORT, e.g. %s", gatewayExample)
	}
	return out, nil
}

func checkGateway(a string) error {
	if a == "" {
		return fmt.Errorf("an empty gateway address: want HOST:PORT, several joined by commas, e.g. %s", gatewayExample)
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("gateway address %q: want HOST:PORT, e.g. %s", a, gatewayExample)
	}
	if host == "" {
		return fmt.Errorf("gateway address %q has no host: want HOST:PORT, e.g. %s", a, gatewayExample)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("gateway address %q: the port must be a number from 1 to 65535, e.g. %s", a, gatewayExample)
	}
	return nil
}

// endpoint is one address of one gateway.
type endpoint struct {
	gateway string // as configured, HOST:PORT
	host    string // its host, the TLS server name unless one is configured
	addr    string // the IP:PORT dialled
}

func (e endpoint) String() string {
	if e.addr == e.gateway {
		return e.gateway
	}
	return e.gateway + " (" + e.addr + ")"
}

// endpoints resolves gateway gw (HOST:PORT, checked) to its addresses, with
// prefer's first when prefer is one of them: the address that last worked
// is tried before its siblings.
func endpoints(ctx context.Context, lookup func(context.Context, string) ([]string, error), gw string, prefer endpoint) ([]endpoint, error) {
	host, port, err := net.SplitHostPort(gw)
	if err != nil {
		return nil, err // ParseGateways let it through: not expected
	}
	if net.ParseIP(host) != nil {
		return []endpoint{{gateway: gw, host: host, addr: gw}}, nil
	}
	ips, err := lookup(ctx, host)
	if err == nil && len(ips) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		return nil, fmt.Errorf("resolve gateway %s: %w", gw, err)
	}
	eps := make([]endpoint, 0, len(ips))
	for _, ip := range ips {
		e := endpoint{gateway: gw, host: host, addr: net.JoinHostPort(ip, port)}
		if e == prefer {
			eps = slices.Insert(eps, 0, e)
			continue
		}
		eps = append(eps, e)
	}
	return eps, nil
}
