// Package envoy makes Envoy speak wakegate's mTLS, for teams that already
// run Envoy instead of 'wakegate connect' or 'wakegate engine'. It owns the
// Envoy v3 configuration of both ends, built from go-control-plane's typed
// resources:
//
//   - the client role: a listener whose TCP proxy reaches the gateway over
//     mTLS (TLS 1.3, SNI, the gateway's name checked among its SANs, ALPN
//     wire.ProtoProxy), as the connect sidecar does;
//   - the engine role: a listener that terminates mTLS, admits only a
//     certificate marked with the gateway role, proxies to BuildKit's
//     socket, and answers the gateway's readiness probe, as 'wakegate
//     engine' does;
//
// either as a static bootstrap whose certificates Envoy reads from a
// credentials directory (file-based SDS, reloaded when files are renamed
// into it), or served by an ADS server (Server) over go-control-plane's
// snapshot cache, certificates included, renewed and pushed without a
// restart.
//
// Every resource passes its generated ValidateAll before it is packed,
// served or written, and a bootstrap round-trips through protojson.
//
// It obtains no certificate itself: the caller passes Credentials (a
// certs.Renewer) and the trust roots, and writes a credentials directory
// (WriteCreds) with what it was given. It must not import gateway, engine,
// connect or cmd; it reads the protocol names from wire, the gateway's
// role mark from identity and the client's file names from certs.
// envoytest reads what it generates as Envoy would, for tests.
package envoy
