// Package wire defines what connect and the gateway say to each other beyond
// the proxied bytes: the ALPN names that pick a connection's purpose, and the
// line protocol of a wake request.
//
// A connection negotiating ProtoProxy (or no ALPN at all) is proxied to the
// client's engine. A connection negotiating ProtoWake asks the gateway to wake
// that engine: the gateway writes progress lines until the engine is ready,
// then a ready line, and keeps the engine awake until the client closes the
// connection. This lets `connect --wait` and `connect -- CMD` wait for a slow
// wake without any BuildKit client's patience running out.
//
// It must not import any other wakegate package.
package wire
