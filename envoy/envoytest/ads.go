package envoytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// ADS is one aggregated discovery stream driven as Envoy drives it: state
// of the world, the node sent on the first request only, one subscription
// per type, each response ACKed (version and nonce) or NACKed (the last
// applied version, the nonce, and an error).
type ADS struct {
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	cancel context.CancelFunc
	read   chan struct{} // closed when the reader ends

	mu       sync.Mutex // guards everything below
	node     *core.Node // nil once sent
	names    map[string][]string
	applied  map[string]string // type → version last ACKed
	pending  []*discovery.DiscoveryResponse
	arrived  chan struct{} // closed and replaced when a response arrives or the stream ends
	recvErr  error
	sendLock sync.Mutex // one Send at a time, as gRPC requires
}

// DialADS opens an ADS stream on conn as node. Close ends it.
func DialADS(ctx context.Context, conn grpc.ClientConnInterface, node string) (*ADS, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open ADS stream: %w", err)
	}
	a := &ADS{
		stream:  stream,
		cancel:  cancel,
		read:    make(chan struct{}),
		node:    &core.Node{Id: node, Cluster: "wakegate"},
		names:   map[string][]string{},
		applied: map[string]string{},
		arrived: make(chan struct{}),
	}
	go a.reader()
	return a, nil
}

func (a *ADS) reader() {
	defer close(a.read)
	for {
		resp, err := a.stream.Recv()
		a.mu.Lock()
		if err != nil {
			a.recvErr = err
		} else {
			a.pending = append(a.pending, resp)
		}
		close(a.arrived)
		a.arrived = make(chan struct{})
		a.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Close ends the stream and waits for its reader.
func (a *ADS) Close() {
	a.cancel()
	<-a.read
}

// Subscribe asks for typeURL: every resource (no names, as Envoy asks for
// listeners and clusters) or the names given (as it asks for secrets).
func (a *ADS) Subscribe(typeURL string, names ...string) error {
	a.mu.Lock()
	a.names[typeURL] = names
	a.mu.Unlock()
	return a.send(&discovery.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names})
}

// Next waits for the next response of typeURL; responses of other types
// wait their turn.
func (a *ADS) Next(ctx context.Context, typeURL string) (*discovery.DiscoveryResponse, error) {
	for {
		a.mu.Lock()
		for i, r := range a.pending {
			if r.GetTypeUrl() == typeURL {
				a.pending = slices.Delete(a.pending, i, i+1)
				a.mu.Unlock()
				return r, nil
			}
		}
		err, arrived := a.recvErr, a.arrived
		a.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("ADS stream ended waiting for %s: %w", typeURL, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no %s response: %w", typeURL, context.Cause(ctx))
		case <-arrived:
		}
	}
}

// Pending reports whether a response of typeURL has arrived and not been
// taken by Next.
func (a *ADS) Pending(typeURL string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.ContainsFunc(a.pending, func(r *discovery.DiscoveryResponse) bool { return r.GetTypeUrl() == typeURL })
}

// Ack applies resp: its version becomes the type's applied version.
func (a *ADS) Ack(resp *discovery.DiscoveryResponse) error {
	a.mu.Lock()
	a.applied[resp.GetTypeUrl()] = resp.GetVersionInfo()
	names := a.names[resp.GetTypeUrl()]
	a.mu.Unlock()
	return a.send(&discovery.DiscoveryRequest{
		TypeUrl: resp.GetTypeUrl(), ResourceNames: names,
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
	})
}

// Nack rejects resp with Envoy's error message, keeping the type's
// applied version.
func (a *ADS) Nack(resp *discovery.DiscoveryResponse, message string) error {
	a.mu.Lock()
	applied := a.applied[resp.GetTypeUrl()]
	names := a.names[resp.GetTypeUrl()]
	a.mu.Unlock()
	return a.send(&discovery.DiscoveryRequest{
		TypeUrl: resp.GetTypeUrl(), ResourceNames: names,
		VersionInfo: applied, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: message}, // INVALID_ARGUMENT, as Envoy sends
	})
}

// Applied is the version of typeURL last ACKed.
func (a *ADS) Applied(typeURL string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applied[typeURL]
}

func (a *ADS) send(req *discovery.DiscoveryRequest) error {
	a.mu.Lock()
	req.Node, a.node = a.node, nil
	a.mu.Unlock()
	a.sendLock.Lock()
	defer a.sendLock.Unlock()
	if err := a.stream.Send(req); err != nil {
		return fmt.Errorf("ADS send %s: %w", req.GetTypeUrl(), err)
	}
	return nil
}

// Config is what an Envoy holds after Fetch.
type Config struct {
	Listeners []*listener.Listener
	Clusters  []*cluster.Cluster
	Secrets   []*tlsv3.Secret
	// Versions are the versions applied, by type URL.
	Versions map[string]string
}

// Fetch does what Envoy does at start: clusters and listeners (all of
// them), then the secrets they name, each response validated and ACKed.
func (a *ADS) Fetch(ctx context.Context) (*Config, error) {
	cfg := &Config{Versions: map[string]string{}}
	for _, typeURL := range []string{resource.ClusterType, resource.ListenerType} {
		if err := a.Subscribe(typeURL); err != nil {
			return nil, err
		}
	}
	for _, typeURL := range []string{resource.ClusterType, resource.ListenerType} {
		resp, err := a.Next(ctx, typeURL)
		if err != nil {
			return nil, err
		}
		if err := cfg.take(resp); err != nil {
			return nil, err
		}
		if err := a.Ack(resp); err != nil {
			return nil, err
		}
	}
	names := cfg.SecretNames()
	if len(names) == 0 {
		return nil, errors.New("the listeners and clusters name no secret")
	}
	if err := a.Subscribe(resource.SecretType, names...); err != nil {
		return nil, err
	}
	resp, err := a.Next(ctx, resource.SecretType)
	if err != nil {
		return nil, err
	}
	if err := cfg.take(resp); err != nil {
		return nil, err
	}
	return cfg, a.Ack(resp)
}

// Take reads one response, validating each resource.
func Take(resp *discovery.DiscoveryResponse) (*Config, error) {
	c := &Config{Versions: map[string]string{}}
	return c, c.take(resp)
}

// take reads a response's resources into cfg, validating each.
func (c *Config) take(resp *discovery.DiscoveryResponse) error {
	for _, r := range resp.GetResources() {
		var err error
		switch resp.GetTypeUrl() {
		case resource.ClusterType:
			x := &cluster.Cluster{}
			if err = r.UnmarshalTo(x); err == nil {
				err = x.ValidateAll()
				c.Clusters = append(c.Clusters, x)
			}
		case resource.ListenerType:
			x := &listener.Listener{}
			if err = r.UnmarshalTo(x); err == nil {
				err = x.ValidateAll()
				c.Listeners = append(c.Listeners, x)
			}
		case resource.SecretType:
			x := &tlsv3.Secret{}
			if err = r.UnmarshalTo(x); err == nil {
				err = x.ValidateAll()
				c.Secrets = append(c.Secrets, x)
			}
		default:
			err = fmt.Errorf("unexpected type %s", resp.GetTypeUrl())
		}
		if err != nil {
			return fmt.Errorf("%s version %s: %w", resp.GetTypeUrl(), resp.GetVersionInfo(), err)
		}
	}
	c.Versions[resp.GetTypeUrl()] = resp.GetVersionInfo()
	return nil
}

// SecretNames are the SDS secrets the listeners and clusters refer to.
func (c *Config) SecretNames() []string {
	var names []string
	add := func(common *tlsv3.CommonTlsContext) {
		for _, ref := range common.GetTlsCertificateSdsSecretConfigs() {
			names = append(names, ref.GetName())
		}
		if ref := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); ref != nil {
			names = append(names, ref.GetName())
		}
	}
	for _, cl := range c.Clusters {
		var up tlsv3.UpstreamTlsContext
		if typedConfig(cl.GetTransportSocket(), &up) == nil {
			add(up.GetCommonTlsContext())
		}
	}
	for _, l := range c.Listeners {
		for _, fc := range l.GetFilterChains() {
			var down tlsv3.DownstreamTlsContext
			if typedConfig(fc.GetTransportSocket(), &down) == nil {
				add(down.GetCommonTlsContext())
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Cluster is the cluster named name.
func (c *Config) Cluster(name string) *cluster.Cluster {
	for _, cl := range c.Clusters {
		if cl.GetName() == name {
			return cl
		}
	}
	return nil
}

// SecretSource resolves the secrets received.
func (c *Config) SecretSource() Secrets { return FromADS(c.Secrets...) }
