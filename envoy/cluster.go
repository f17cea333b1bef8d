package envoy

import (
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Timeouts of the clusters. The gateway accepts at once and holds a
// connection while it wakes an engine, so connecting is quick everywhere.
const (
	connectTimeout = 10 * time.Second
	// healthInterval is how often the engine role asks BuildKit whether
	// it serves; the gateway probes every 100 ms while it wakes an engine,
	// so this bounds how late a wake is seen.
	healthInterval = time.Second
)

// httpOptionsKey is where a cluster's HTTP protocol options go in
// typed_extension_protocol_options.
const httpOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// Clusters are Envoy's clusters for c: the gateway (client role), or
// BuildKit and its health (engine role).
func (c *Config) Clusters(s Secrets) ([]*cluster.Cluster, error) {
	var p packer
	var out []*cluster.Cluster
	switch c.Role {
	case Client:
		addr, err := parseAddress(c.Gateway)
		if err != nil {
			return nil, err
		}
		gw := plainCluster(GatewayCluster, addr)
		gw.TransportSocket = transportSocket(&p, "gateway tls", c.upstreamTLS(s))
		out = append(out, gw)
	case Engine:
		addr, err := parseAddress(c.Upstream)
		if err != nil {
			return nil, err
		}
		health := plainCluster(BuildkitHealthCluster, addr)
		health.TypedExtensionProtocolOptions = http2Options(&p)
		health.HealthChecks = []*core.HealthCheck{{
			Timeout:            durationpb.New(healthInterval),
			Interval:           durationpb.New(healthInterval),
			NoTrafficInterval:  durationpb.New(healthInterval), // this cluster carries no traffic but its checks
			UnhealthyThreshold: wrapperspb.UInt32(1),
			HealthyThreshold:   wrapperspb.UInt32(1),
			HealthChecker:      &core.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &core.HealthCheck_GrpcHealthCheck{}},
		}}
		out = append(out, plainCluster(BuildkitCluster, addr), health)
	}
	if p.err != nil {
		return nil, p.err
	}
	for _, cl := range out {
		if err := check("cluster "+cl.Name, cl); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// plainCluster reaches one address: as it is (an IP or a unix socket), or
// resolved by name with IPv4 first.
func plainCluster(name string, addr *core.Address) *cluster.Cluster {
	cl := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LoadAssignment: &endpoint.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: []*endpoint.LbEndpoint{{
				HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: addr}},
			}}}},
		},
	}
	if isName(addr) {
		cl.ClusterDiscoveryType = &cluster.Cluster_Type{Type: cluster.Cluster_LOGICAL_DNS}
		cl.DnsLookupFamily = cluster.Cluster_V4_PREFERRED
	}
	return cl
}

// http2Options makes a cluster speak HTTP/2 (gRPC): the ADS server's, and
// BuildKit's health service.
func http2Options(p *packer) map[string]*anypb.Any {
	opts := &upstreamhttp.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &core.Http2ProtocolOptions{},
				},
			},
		},
	}
	return map[string]*anypb.Any{httpOptionsKey: p.pack("http/2 options", opts)}
}
