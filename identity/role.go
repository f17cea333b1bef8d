package identity

import (
	"crypto/x509"
	"strings"
)

// ReservedPrefix begins the names of wakegate's own certificates
// (wakegate-gateway, wakegate-engine-N). The CA refuses it to clients, so a
// name alone never makes a client look like the gateway or an engine.
const ReservedPrefix = "wakegate-"

// GatewayName is the common name of the gateway's certificate.
const GatewayName = ReservedPrefix + "gateway"

// EngineNamePrefix begins the common name of every engine's certificate;
// the gateway dials no peer whose name lacks it.
const EngineNamePrefix = ReservedPrefix + "engine-"

// EngineName is the common name of engine id's certificate, the one name
// every host and the gateway agree on: the token the gateway makes for the
// engine names it, and the engine enrols under it. Pool ids of the form
// engine-N (local and exec engines) keep their number alone
// (wakegate-engine-0); any other id (a Fly machine's) follows the prefix
// whole (wakegate-engine-148e…).
func EngineName(id string) string {
	return EngineNamePrefix + strings.TrimPrefix(id, "engine-")
}

// Reserved reports whether name is one that only the servers provisioner
// may issue.
func Reserved(name string) bool { return strings.HasPrefix(name, ReservedPrefix) }

// RoleURIPrefix begins the URI SAN that marks what one of wakegate's own
// certificates is for: wakegate://role/gateway. Only the servers provisioner
// issues it — the clients provisioner refuses any certificate that asks for
// it — so an engine admits the gateway by this mark, not by a name.
const RoleURIPrefix = "wakegate://role/"

// RoleGateway is the role of the gateway's certificate: it serves clients
// and dials engines.
const RoleGateway = "gateway"

// RoleURI is the SAN that marks role.
func RoleURI(role string) string { return RoleURIPrefix + role }

// IsRoleURI reports whether the SAN s is a role mark, whichever role.
func IsRoleURI(s string) bool { return strings.HasPrefix(s, RoleURIPrefix) }

// Role is the role a certificate is marked with, or "" when it carries no
// role SAN. It reads the SAN only: whether the certificate chains to the
// CA, and may be used the way it is presented, is the caller's check.
func Role(cert *x509.Certificate) string {
	for _, u := range cert.URIs {
		if r, ok := strings.CutPrefix(u.String(), RoleURIPrefix); ok && r != "" {
			return r
		}
	}
	return ""
}
