package envoytest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
)

// ClientTLS is the TLS a cluster's upstream connections would use in
// Envoy: its certificate, SNI, ALPN and TLS versions, and the server
// checked as Envoy checks it — against the trust bundle with the
// server-auth purpose BoringSSL's client applies, then against the SAN
// matchers (any one matching; with none, any name passes, as in Envoy).
// Go's own host name check is off, so that only the configuration decides.
func ClientTLS(c *cluster.Cluster, s Secrets) (*tls.Config, error) {
	var up tlsv3.UpstreamTlsContext
	if err := typedConfig(c.GetTransportSocket(), &up); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", c.GetName(), err)
	}
	common := up.GetCommonTlsContext()
	cfg, v, err := base(common, s)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", c.GetName(), err)
	}
	cfg.ServerName = up.GetSni()
	cert := cfg.Certificates[0]
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return v.verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
	}
	return cfg, nil
}

// ServerTLS is the TLS an engine-role listener would terminate with in
// Envoy: the filter chain is chosen by the ALPN protocols the client
// offers (the TLS inspector's filter_chain_match.application_protocols),
// and the client is checked as Envoy checks it — a certificate required,
// the trust bundle with the client-auth purpose, then the SAN matchers.
// chosen, if not nil, is told the index of the chain each handshake took.
func ServerTLS(l *listener.Listener, s Secrets, chosen func(int)) (*tls.Config, error) {
	type chain struct {
		protos []string // the match; empty matches any
		cfg    *tls.Config
	}
	var chains []chain
	for i, fc := range l.GetFilterChains() {
		var down tlsv3.DownstreamTlsContext
		if err := typedConfig(fc.GetTransportSocket(), &down); err != nil {
			return nil, fmt.Errorf("listener %s chain %d: %w", l.GetName(), i, err)
		}
		cfg, v, err := base(down.GetCommonTlsContext(), s)
		if err != nil {
			return nil, fmt.Errorf("listener %s chain %d: %w", l.GetName(), i, err)
		}
		cfg.ClientAuth = tls.RequestClientCert
		require := down.GetRequireClientCertificate().GetValue()
		if require {
			cfg.ClientAuth = tls.RequireAnyClientCert
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if chosen != nil {
				chosen(i)
			}
			if len(cs.PeerCertificates) == 0 && !require {
				return nil
			}
			return v.verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
		}
		chains = append(chains, chain{fc.GetFilterChainMatch().GetApplicationProtocols(), cfg})
	}
	if len(chains) == 0 {
		return nil, fmt.Errorf("listener %s has no filter chain", l.GetName())
	}
	pick := func(offered []string) *tls.Config {
		// The most specific match wins: a chain naming an offered
		// protocol, else one that names none.
		for _, c := range chains {
			if slices.ContainsFunc(c.protos, func(p string) bool { return slices.Contains(offered, p) }) {
				return c.cfg
			}
		}
		for _, c := range chains {
			if len(c.protos) == 0 {
				return c.cfg
			}
		}
		return nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			cfg := pick(hello.SupportedProtos)
			if cfg == nil {
				return nil, fmt.Errorf("no filter chain matches ALPN %q", hello.SupportedProtos)
			}
			if !slices.ContainsFunc(cfg.NextProtos, func(p string) bool { return slices.Contains(hello.SupportedProtos, p) }) {
				// BoringSSL goes on without ALPN where Go would refuse.
				cfg = cfg.Clone()
				cfg.NextProtos = nil
			}
			return cfg, nil
		},
	}, nil
}

// base is what both sides share: TLS versions, ALPN, the certificate, and
// the validation in effect.
func base(c *tlsv3.CommonTlsContext, s Secrets) (*tls.Config, *validation, error) {
	if c == nil {
		return nil, nil, errors.New("no common TLS context")
	}
	minV, err := version(c.GetTlsParams().GetTlsMinimumProtocolVersion(), tls.VersionTLS12)
	if err != nil {
		return nil, nil, err
	}
	maxV, err := version(c.GetTlsParams().GetTlsMaximumProtocolVersion(), tls.VersionTLS13)
	if err != nil {
		return nil, nil, err
	}
	cert, err := s.certificate(c.GetTlsCertificateSdsSecretConfigs())
	if err != nil {
		return nil, nil, err
	}
	v, err := s.validation(c)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Config{
		MinVersion:   minV,
		MaxVersion:   maxV,
		NextProtos:   c.GetAlpnProtocols(),
		Certificates: []tls.Certificate{cert},
	}, v, nil
}

func version(p tlsv3.TlsParameters_TlsProtocol, auto uint16) (uint16, error) {
	switch p {
	case tlsv3.TlsParameters_TLS_AUTO:
		return auto, nil
	case tlsv3.TlsParameters_TLSv1_2:
		return tls.VersionTLS12, nil
	case tlsv3.TlsParameters_TLSv1_3:
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("TLS version %v not understood", p)
}

// verify checks a peer's chain against the trust bundle for purpose, then
// its SANs against the matchers.
func (v *validation) verify(chain []*x509.Certificate, purpose x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return errors.New("envoy: peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{purpose}}); err != nil {
		return fmt.Errorf("envoy: peer certificate: %w", err)
	}
	if len(v.sans) == 0 {
		return nil
	}
	for _, m := range v.sans {
		ok, err := matchSAN(chain[0], m)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("envoy: peer certificate %q matches no SAN matcher (DNS %q, IP %q, URI %q)",
		chain[0].Subject.CommonName, chain[0].DNSNames, chain[0].IPAddresses, chain[0].URIs)
}

func matchSAN(c *x509.Certificate, m *tlsv3.SubjectAltNameMatcher) (bool, error) {
	var values []string
	switch m.GetSanType() {
	case tlsv3.SubjectAltNameMatcher_DNS:
		values = c.DNSNames
	case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
		for _, ip := range c.IPAddresses {
			values = append(values, ip.String())
		}
	case tlsv3.SubjectAltNameMatcher_URI:
		for _, u := range c.URIs {
			values = append(values, u.String())
		}
	case tlsv3.SubjectAltNameMatcher_EMAIL:
		values = c.EmailAddresses
	default:
		return false, fmt.Errorf("SAN type %v not understood", m.GetSanType())
	}
	sm := m.GetMatcher()
	fold := func(s string) string {
		if sm.GetIgnoreCase() {
			return strings.ToLower(s)
		}
		return s
	}
	for _, val := range values {
		val = fold(val)
		switch {
		case sm.GetExact() != "":
			// Exact only: wakegate's CA issues no wildcard names.
			if val == fold(sm.GetExact()) {
				return true, nil
			}
		case sm.GetPrefix() != "":
			if strings.HasPrefix(val, fold(sm.GetPrefix())) {
				return true, nil
			}
		case sm.GetSuffix() != "":
			if strings.HasSuffix(val, fold(sm.GetSuffix())) {
				return true, nil
			}
		default:
			return false, fmt.Errorf("string matcher %v not understood", sm)
		}
	}
	return false, nil
}

// typedConfig unpacks a TLS transport socket's context into into, and
// validates it.
func typedConfig(ts *core.TransportSocket, into interface {
	proto.Message
	ValidateAll() error
}) error {
	if ts == nil {
		return errors.New("no transport socket: the connection would be plain TCP")
	}
	if ts.GetName() != wellknown.TransportSocketTLS {
		return fmt.Errorf("transport socket %q, want %q", ts.GetName(), wellknown.TransportSocketTLS)
	}
	if err := ts.GetTypedConfig().UnmarshalTo(into); err != nil {
		return err
	}
	return into.ValidateAll()
}

// Endpoint is the one address a cluster reaches: ("tcp", "host:port") or
// ("unix", path).
func Endpoint(c *cluster.Cluster) (network, addr string, err error) {
	eps := c.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		return "", "", fmt.Errorf("cluster %s: want one endpoint", c.GetName())
	}
	a := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress()
	if p := a.GetPipe(); p != nil {
		return "unix", p.GetPath(), nil
	}
	sa := a.GetSocketAddress()
	return "tcp", net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))), nil
}
