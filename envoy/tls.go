package envoy

import (
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/wire"
)

// Secrets says where Envoy finds its certificate and trust bundle.
type Secrets struct {
	// Dir, if set, is a credentials directory (absolute, as Envoy sees
	// it): Envoy reads SDS files there (SDSFiles) that name the
	// certificate, key and root files, and reloads them when a file is
	// renamed into Dir. If empty, the secrets come over ADS.
	Dir string
}

// sds refers Envoy to the secret name: over ADS, or from its SDS file in
// the credentials directory.
func (s Secrets) sds(name string) *tlsv3.SdsSecretConfig {
	src := &core.ConfigSource{ResourceApiVersion: core.ApiVersion_V3}
	if s.Dir == "" {
		src.ConfigSourceSpecifier = &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}
	} else {
		src.ConfigSourceSpecifier = &core.ConfigSource_PathConfigSource{PathConfigSource: &core.PathConfigSource{
			Path:             sdsPath(s.Dir, name),
			WatchedDirectory: &core.WatchedDirectory{Path: s.Dir},
		}}
	}
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: src}
}

// commonTLS is wakegate's TLS profile in Envoy's terms, as certs.ServerTLS
// and certs.ClientTLS set it for Go: TLS 1.3 only, this party's
// certificate, and peers that chain to the CA root and carry one of sans.
func commonTLS(s Secrets, alpn []string, sans []*tlsv3.SubjectAltNameMatcher) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		},
		AlpnProtocols:                  alpn,
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{s.sds(CertSecret)},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				// What a peer must be stays in the config; what it
				// must chain to comes with the secrets.
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: s.sds(TrustSecret),
			},
		},
	}
}

// upstreamTLS is the client role's side of the gateway's port: SNI and a
// SAN check of the gateway's name (Envoy checks no name unless told), and
// ALPN wire.ProtoProxy, which the gateway answers by proxying to the
// client's engine.
func (c *Config) upstreamTLS(s Secrets) *tlsv3.UpstreamTlsContext {
	san := &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exact(c.ServerName)}
	sni := c.ServerName
	if c.serverNameIsIP() {
		// An IP is never sent as SNI (RFC 6066); it is checked among the
		// IP SANs, as Go's crypto/tls does for connect.
		san.SanType = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
		sni = ""
	}
	return &tlsv3.UpstreamTlsContext{
		Sni:              sni,
		CommonTlsContext: commonTLS(s, []string{wire.ProtoProxy}, []*tlsv3.SubjectAltNameMatcher{san}),
	}
}

// downstreamTLS is the engine role's mTLS port for one ALPN protocol: a
// client certificate is required, and only one marked with the gateway's
// role (identity.RoleURI, which only the CA's servers provisioner issues,
// and only to the gateway) is admitted, as 'wakegate engine' admits it.
func downstreamTLS(s Secrets, alpn string) *tlsv3.DownstreamTlsContext {
	gateway := &tlsv3.SubjectAltNameMatcher{
		SanType: tlsv3.SubjectAltNameMatcher_URI,
		Matcher: exact(identity.RoleURI(identity.RoleGateway)),
	}
	return &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext:         commonTLS(s, []string{alpn}, []*tlsv3.SubjectAltNameMatcher{gateway}),
	}
}

func exact(s string) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: s}}
}

// transportSocket wraps a TLS context as Envoy's TLS transport socket.
func transportSocket(p *packer, what string, ctx validated) *core.TransportSocket {
	return &core.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: p.pack(what, ctx)},
	}
}
