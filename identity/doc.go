// Package identity reads who a verified peer is from its certificate: the
// name an operator gave it ('certs issue --name'), the repository it builds
// (a wakegate://repo/OWNER/NAME URI SAN, the cache-affinity key) and, for a
// certificate obtained by OIDC enrolment, the CI job's claims (a
// wakegate://oidc URI SAN), so that a gateway can judge every handshake
// against its policy without asking anyone; and, for wakegate's own
// certificates, their role (a wakegate://role/ URI SAN that only the servers
// provisioner issues) and the wakegate- names reserved to them.
//
// It is a leaf: the standard library only. The routing core (gateway,
// engine) reads identities through it without linking the CA.
package identity
