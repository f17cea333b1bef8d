package envoy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// nodeCluster is the node's cluster name: Envoy wants one, and stats and
// logs show it.
const nodeCluster = "wakegate"

// StaticBootstrap is a complete bootstrap whose certificates Envoy reads
// from the credentials directory dir (an absolute path, as Envoy sees it):
// the listener and clusters of c, with secrets from the SDS files there
// (SDSFiles), reloaded when files are renamed into dir.
func (c *Config) StaticBootstrap(dir string) (*bootstrap.Bootstrap, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("credentials directory %q: Envoy needs an absolute path", dir)
	}
	s := Secrets{Dir: filepath.Clean(dir)}
	l, err := c.Listener(s)
	if err != nil {
		return nil, err
	}
	clusters, err := c.Clusters(s)
	if err != nil {
		return nil, err
	}
	b := &bootstrap.Bootstrap{
		Node: c.node(),
		StaticResources: &bootstrap.Bootstrap_StaticResources{
			Listeners: []*listener.Listener{l},
			Clusters:  clusters,
		},
	}
	return b, check("bootstrap", b)
}

// XDSBootstrap is a bootstrap that holds only the node id and the way to
// the ADS server at xds (IP:PORT, HOST:PORT or unix:///PATH, as Envoy
// reaches it): listeners, clusters and secrets all come from there.
func (c *Config) XDSBootstrap(xds string) (*bootstrap.Bootstrap, error) {
	addr, err := parseAddress(xds)
	if err != nil {
		return nil, fmt.Errorf("xds %q: %w", xds, err)
	}
	var p packer
	xc := plainCluster(XDSCluster, addr)
	xc.TypedExtensionProtocolOptions = http2Options(&p)
	if p.err != nil {
		return nil, p.err
	}
	ads := &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
	b := &bootstrap.Bootstrap{
		Node:            c.node(),
		StaticResources: &bootstrap.Bootstrap_StaticResources{Clusters: []*cluster.Cluster{xc}},
		DynamicResources: &bootstrap.Bootstrap_DynamicResources{
			AdsConfig: &core.ApiConfigSource{
				ApiType:                   core.ApiConfigSource_GRPC, // state of the world: what Server speaks
				TransportApiVersion:       core.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*core.GrpcService{{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: XDSCluster},
				}}},
			},
			CdsConfig: ads,
			LdsConfig: ads,
		},
	}
	return b, check("bootstrap", b)
}

func (c *Config) node() *core.Node { return &core.Node{Id: c.NodeID, Cluster: nodeCluster} }

// MarshalJSON renders m as indented JSON with Envoy's field names, and
// proves it reads back: unmarshalled into into (a new message of m's
// type), it equals m and passes validation.
func MarshalJSON(m validated, into validated) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("envoy: marshal %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	if err := protojson.Unmarshal(raw, into); err != nil {
		return nil, fmt.Errorf("envoy: %s does not read back: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	if !proto.Equal(m, into) {
		return nil, errors.New("envoy: " + string(m.ProtoReflect().Descriptor().FullName()) + " reads back different")
	}
	if err := check("read-back "+string(m.ProtoReflect().Descriptor().Name()), into); err != nil {
		return nil, err
	}
	// protojson varies its spacing on purpose; golden files and diffs
	// want one layout.
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, err
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}
