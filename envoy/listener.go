package envoy

import (
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	healthcheck "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wakegate/wakegate/wire"
)

// ProtoStatus is the ALPN protocol of the gateway's status requests to an
// engine (engine.ProtoStatus: HTTP/1.1 GET /ready and /status on the
// engine's mTLS port). It is spelled here because this package may not
// import engine; a test holds the two equal.
const ProtoStatus = "http/1.1"

// ReadyPath is the path the gateway probes while it wakes an engine.
const ReadyPath = "/ready"

// Listener is Envoy's listener for c: in the client role, a TCP proxy to
// the gateway; in the engine role, mTLS for the gateway only, proxied to
// BuildKit, with the gateway's readiness probe answered from BuildKit's
// health.
func (c *Config) Listener(s Secrets) (*listener.Listener, error) {
	addr, err := parseListen(c.Listen)
	if err != nil {
		return nil, err
	}
	var p packer
	l := &listener.Listener{Name: ListenerName, Address: addr}
	switch c.Role {
	case Client:
		l.FilterChains = []*listener.FilterChain{{Filters: []*listener.Filter{tcpProxy(&p, GatewayCluster)}}}
	case Engine:
		// The TLS inspector reads the ALPN a connection offers, so that
		// the gateway's status requests take their own chain.
		l.ListenerFilters = []*listener.ListenerFilter{{
			Name:       wellknown.TLSInspector,
			ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: p.pack("tls inspector", &tlsinspector.TlsInspector{})},
		}}
		l.FilterChains = []*listener.FilterChain{
			{
				FilterChainMatch: &listener.FilterChainMatch{ApplicationProtocols: []string{ProtoStatus}},
				TransportSocket:  transportSocket(&p, "engine status tls", downstreamTLS(s, ProtoStatus)),
				Filters:          []*listener.Filter{statusFilter(&p)},
			},
			{
				// Everything else the gateway opens (ALPN wire.ProtoProxy,
				// or none) is a stream to BuildKit.
				TransportSocket: transportSocket(&p, "engine tls", downstreamTLS(s, wire.ProtoProxy)),
				Filters:         []*listener.Filter{tcpProxy(&p, BuildkitCluster)},
			},
		}
	}
	if p.err != nil {
		return nil, p.err
	}
	return l, check("listener", l)
}

func tcpProxy(p *packer, cluster string) *listener.Filter {
	return &listener.Filter{
		Name: wellknown.TCPProxy,
		ConfigType: &listener.Filter_TypedConfig{TypedConfig: p.pack("tcp proxy", &tcpproxy.TcpProxy{
			StatPrefix:       cluster,
			ClusterSpecifier: &tcpproxy.TcpProxy_Cluster{Cluster: cluster},
		})},
	}
}

// statusFilter answers the gateway's readiness probe, GET /ready, with 200
// while BuildKit's gRPC health service says it serves and 503 otherwise,
// as 'wakegate engine' does. Other paths get 404: /status (connections
// and builds, which Envoy cannot count) is not served, so the gateway
// stops an idle engine after three unanswered asks instead of one.
func statusFilter(p *packer) *listener.Filter {
	ready := &healthcheck.HealthCheck{
		PassThroughMode: wrapperspb.Bool(false),
		Headers: []*route.HeaderMatcher{{
			Name:                 ":path",
			HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: exact(ReadyPath)},
		}},
		ClusterMinHealthyPercentages: map[string]*typev3.Percent{BuildkitHealthCluster: {Value: 100}},
	}
	notFound := &route.Route{
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{
			Status: 404,
			Body:   &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "this engine is fronted by Envoy: only GET " + ReadyPath + " is served\n"}},
		}},
	}
	m := &hcm.HttpConnectionManager{
		StatPrefix: "engine_status",
		CodecType:  hcm.HttpConnectionManager_HTTP1,
		RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: &route.RouteConfiguration{
			Name:         "engine_status",
			VirtualHosts: []*route.VirtualHost{{Name: "engine", Domains: []string{"*"}, Routes: []*route.Route{notFound}}},
		}},
		HttpFilters: []*hcm.HttpFilter{
			{Name: wellknown.HealthCheck, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: p.pack("readiness filter", ready)}},
			{Name: wellknown.Router, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: p.pack("router", &router.Router{})}},
		},
	}
	return &listener.Filter{
		Name:       wellknown.HTTPConnectionManager,
		ConfigType: &listener.Filter_TypedConfig{TypedConfig: p.pack("engine status", m)},
	}
}
