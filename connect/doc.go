// Package connect is the sidecar a CI step runs: it accepts plain TCP on
// localhost, or connections on a unix socket only its user may open (what
// buildctl, buildx and Dagger speak), and carries each connection over mTLS
// to the gateway. Before a command runs it asks the gateway to wake the
// client's engine and waits, with progress, until the engine is ready, so
// that a slow wake never exhausts a BuildKit client's patience with a silent
// connection.
//
// It must not import gateway, engine or cmd.
package connect
