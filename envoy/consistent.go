package envoy

import (
	"fmt"
	"slices"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// checkSecrets is the half of a snapshot's consistency that
// go-control-plane's Consistent leaves out: every secret the listener and
// clusters name over ADS is in the snapshot, and the snapshot holds no
// other. In ADS mode a secret Envoy asks for and the snapshot lacks gets
// no answer at all: Envoy would wait, its listener never ready.
func checkSecrets(l *listener.Listener, clusters []*cluster.Cluster, secrets []*tlsv3.Secret) error {
	var named []string
	for _, c := range clusters {
		n, err := sdsNames(c.GetTransportSocket(), &tlsv3.UpstreamTlsContext{})
		if err != nil {
			return fmt.Errorf("cluster %s: %w", c.GetName(), err)
		}
		named = append(named, n...)
	}
	for _, fc := range l.GetFilterChains() {
		n, err := sdsNames(fc.GetTransportSocket(), &tlsv3.DownstreamTlsContext{})
		if err != nil {
			return fmt.Errorf("listener %s: %w", l.GetName(), err)
		}
		named = append(named, n...)
	}
	var have []string
	for _, s := range secrets {
		have = append(have, s.GetName())
	}
	slices.Sort(named)
	slices.Sort(have)
	if named, have = slices.Compact(named), slices.Compact(have); !slices.Equal(named, have) {
		return fmt.Errorf("the listener and clusters name secrets %q, the snapshot holds %q", named, have)
	}
	return nil
}

// tlsContext is either side's TLS context.
type tlsContext interface {
	validated
	GetCommonTlsContext() *tlsv3.CommonTlsContext
}

// sdsNames are the secrets a transport socket's TLS context names over
// ADS; a plain socket names none.
func sdsNames(ts *core.TransportSocket, ctx tlsContext) ([]string, error) {
	if ts == nil {
		return nil, nil
	}
	if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
		return nil, err
	}
	common := ctx.GetCommonTlsContext()
	refs := slices.Clone(common.GetTlsCertificateSdsSecretConfigs())
	if v := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); v != nil {
		refs = append(refs, v)
	}
	var names []string
	for _, r := range refs {
		if r.GetSdsConfig().GetAds() != nil {
			names = append(names, r.GetName())
		}
	}
	return names, nil
}
