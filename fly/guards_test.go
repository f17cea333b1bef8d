package fly

import "github.com/wakegate/wakegate/gateway"

// fly must not import gateway, so it meets the gateway's interfaces
// structurally; these fail the build when one of them drifts.
var (
	_ gateway.Provider        = (*Provider)(nil)
	_ gateway.StartReporter   = (*Provider)(nil)
	_ gateway.HostUnavailable = (*HostError)(nil)
	_ gateway.StillStopping   = (*StoppingError)(nil)
	_ gateway.EngineBusy      = busyError{}
)
