package cluster_test

import (
	"github.com/wakegate/wakegate/cluster"
	"github.com/wakegate/wakegate/gateway"
)

// cluster must not import gateway, so it meets the gateway's interfaces
// structurally; these fail the build when one of them drifts.
var (
	_ gateway.Provider      = (*cluster.Provider)(nil)
	_ gateway.Watcher       = (*cluster.Provider)(nil)
	_ gateway.StartReporter = (*cluster.Provider)(nil)
	_ gateway.EngineBusy    = cluster.ErrBusy.(gateway.EngineBusy)
)
