package connect

import (
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// addrListener is a listener that only has an address: ClientAddress reads
// nothing else, and a fuzzed path cannot be bound.
type addrListener struct{ addr net.Addr }

func (l addrListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (l addrListener) Close() error              { return nil }
func (l addrListener) Addr() net.Addr            { return l.addr }

// FuzzParseListenAddress: ParseListenAddress does not panic; what it
// accepts reads back the same from its String(); an accepted unix socket
// path is absolute, clean and short enough to bind, and the address its
// clients are given (ClientAddress) parses back to it; a TCP address is
// LocalOnly only on a loopback host.
func FuzzParseListenAddress(f *testing.F) {
	f.Add("127.0.0.1:9080")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseListenAddress(s)
		if err != nil {
			if a != (ListenAddress{}) {
				t.Fatalf("ParseListenAddress(%q) = %+v with error %v", s, a, err)
			}
			return
		}
		if again, err := ParseListenAddress(a.String()); err != nil || again != a {
			t.Fatalf("ParseListenAddress(%q) = %+v; its String %q reads back as %+v, %v", s, a, a, again, err)
		}
		switch a.Network {
		case "unix":
			if !filepath.IsAbs(a.Address) || filepath.Clean(a.Address) != a.Address {
				t.Fatalf("ParseListenAddress(%q): socket path %q is not absolute and clean", s, a.Address)
			}
			if len(a.Address) > maxSocketPath || strings.ContainsAny(a.Address, "?#") || urlUnsafe(a.Address) {
				t.Fatalf("ParseListenAddress(%q): socket path %q accepted", s, a.Address)
			}
			if !a.LocalOnly() {
				t.Fatalf("unix socket %q not LocalOnly", a.Address)
			}
			client := ClientAddress(addrListener{&net.UnixAddr{Name: a.Address, Net: "unix"}})
			if back, err := ParseListenAddress(client); err != nil || back != a {
				t.Fatalf("ClientAddress %q of %+v reads back as %+v, %v", client, a, back, err)
			}
			// BuildKit's and gRPC's clients read the address as a URL:
			// it must come back as the same path.
			u, err := url.Parse(client)
			if err != nil || u.Scheme != "unix" || u.Host != "" || u.Path != a.Address {
				t.Fatalf("ClientAddress %q read as a URL: %+v, %v; want path %q", client, u, err, a.Address)
			}
		case "tcp":
			host, _, err := net.SplitHostPort(a.Address)
			if err != nil {
				t.Fatalf("ParseListenAddress(%q) accepted TCP address %q: %v", s, a.Address, err)
			}
			if a.Address != s {
				t.Fatalf("ParseListenAddress(%q) changed a TCP address to %q", s, a.Address)
			}
			if a.LocalOnly() {
				ip, err := netip.ParseAddr(host)
				if !strings.EqualFold(host, "localhost") && (err != nil || !ip.IsLoopback()) {
					t.Fatalf("%q is LocalOnly but its host %q is not loopback", s, host)
				}
			}
		default:
			t.Fatalf("ParseListenAddress(%q): network %q", s, a.Network)
		}
	})
}

// urlUnsafe reports whether a socket path would be misread by a client that
// parses unix://PATH as a URL: a % escape is decoded (or refused when
// malformed) and control characters are refused. ParseListenAddress
// refuses such paths.
func urlUnsafe(path string) bool {
	return strings.ContainsFunc(path, func(r rune) bool { return r == '%' || r < 0x20 || r == 0x7f })
}
