package envoy

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Names of the resources wakegate's Envoy configuration holds. They are
// stable: dashboards and stats key on them.
const (
	// ListenerName is Envoy's one listener, in either role.
	ListenerName = "wakegate"
	// GatewayCluster reaches the gateway (client role).
	GatewayCluster = "wakegate_gateway"
	// BuildkitCluster reaches BuildKit's socket (engine role).
	BuildkitCluster = "buildkit"
	// BuildkitHealthCluster asks BuildKit's gRPC health service whether it
	// serves, for the gateway's readiness probe (engine role).
	BuildkitHealthCluster = "buildkit_health"
	// XDSCluster reaches the ADS server (xDS bootstraps).
	XDSCluster = "wakegate_xds"
	// CertSecret is the certificate Envoy presents, with its key.
	CertSecret = "wakegate_cert"
	// TrustSecret is the trust bundle: the CA root peers must chain to.
	TrustSecret = "wakegate_ca"
)

// validated is every generated Envoy message: protoc-gen-validate gives
// each a ValidateAll that reports every rule it breaks.
type validated interface {
	proto.Message
	ValidateAll() error
}

// check runs m's generated validation, naming what m is.
func check(what string, m validated) error {
	if err := m.ValidateAll(); err != nil {
		return fmt.Errorf("envoy %s: %w", what, err)
	}
	return nil
}

// packer packs typed configs into Any after validating them: validation
// does not look inside an Any, so each config is checked before it is
// hidden in one. The first failure is kept; later calls do nothing.
type packer struct{ err error }

func (p *packer) pack(what string, m validated) *anypb.Any {
	if p.err != nil {
		return nil
	}
	if p.err = check(what, m); p.err != nil {
		return nil
	}
	a, err := anypb.New(m)
	if err != nil {
		p.err = fmt.Errorf("envoy %s: pack: %w", what, err)
	}
	return a
}
