// Package gateway is wakegate's front door: a TLS 1.3 listener that requires
// a client certificate from the CA, routes each client identity to an engine
// of the pool, wakes that engine on demand while holding the connection, and
// proxies bytes once the engine answers BuildKit's API. A held client that
// leaves is let go at once; what it sent while held reaches the engine. Each
// identity has a cap on its open connections, and refusals are logged at a
// bounded rate. When an engine's last connection closes, an idle grace timer
// starts; when it fires the engine is stopped through its Provider.
//
// The gateway defines the interfaces it consumes (Provider, Prober, Dialer);
// hosts (engine's local provider, fly, exec) satisfy them without the gateway
// importing them. It must not import engine, fly, connect or cmd.
package gateway
