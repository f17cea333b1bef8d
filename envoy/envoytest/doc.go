// Package envoytest stands in for Envoy in tests, so that what wakegate
// generates is checked by what Envoy would do with it, without Envoy: it
// turns a generated cluster's UpstreamTlsContext, or a listener's
// DownstreamTlsContext, into a crypto/tls configuration with Envoy's
// semantics (TLS versions, SNI, ALPN, trust from the named SDS secret, SAN
// matchers, and the certificate purpose BoringSSL checks), reading the
// secrets as Envoy would (over ADS, or from the SDS files of a credentials
// directory); and it drives an ADS stream as Envoy does (wildcard CDS and
// LDS, then SDS by name, each response ACKed or NACKed).
//
// Only tests import it. It must not import cmd.
package envoytest
