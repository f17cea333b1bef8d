package main

import (
	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/exechost"
	"github.com/wakegate/wakegate/fly"
	"github.com/wakegate/wakegate/gateway"
)

// The hosts and the engine client meet the gateway's interfaces
// structurally: none of them may import gateway. This is where they are
// wired to it, so this is where a drift fails the build. (fly's error
// types, some unexported, are checked in fly's tests.)
var (
	_ gateway.Provider     = (*engine.Local)(nil)
	_ gateway.Watcher      = (*engine.Local)(nil)
	_ gateway.Provider     = (*exechost.Provider)(nil)
	_ gateway.Provider     = (*fly.Provider)(nil)
	_ gateway.EngineClient = (*engine.Client)(nil)
)
