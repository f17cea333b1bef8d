// Package certs owns wakegate's certificate authority: the root and
// intermediate on disk (Init, Load, RotateIntermediate; keys encrypted
// with the CA password), the embedded smallstep authority with its
// database (OpenAuthority: the clients and servers provisioners, their
// certificate profiles, records, revocation), the step-ca API it serves
// to enrol and renew (APIServer, with bounds for unauthenticated callers,
// and the operator routes 'certs' uses while a gateway holds the
// database), OIDC enrolment (verifying a CI job's token against its
// issuer's published keys and the policy, then signing under the clients
// provisioner), and the client side of all of it: Enroll and EnrollOIDC,
// the Renewer that replaces a certificate at two thirds of its life, the
// RevocationPoller of an engine.
//
// There is one certificate profile per kind, the provisioners'
// templates: the authority applies them, and the offline CA.Issue that
// tests and tools use applies the same ones (leafSANs, leafTemplate), so
// that a test's certificate is a production certificate. Every
// certificate is built with smallstep's go.step.sm/crypto (x509util
// templates, keyutil, pemutil) rather than hand-rolled x509 templates.
//
// It also turns credentials into tls.Configs (ServerTLS, ClientTLS,
// RefuseRevoked) so that every party speaks the same TLS 1.3 profile.
// Reading who a verified peer is belongs to identity, a leaf, so that the
// routing core (gateway, engine) does not link the CA.
//
// It must not import gateway, engine, connect, fly or cmd: they consume
// it.
package certs
