// Package certs owns wakegate's certificate authority on disk: creating the
// root and intermediate (Init), loading them (Load), and issuing the leaf
// certificates that clients, the gateway and engines present (Issue). It
// builds every certificate with smallstep's go.step.sm/crypto (x509util
// templates, keyutil, pemutil) rather than hand-rolled x509 templates.
//
// It also turns credentials on disk into tls.Configs (ServerTLS, ClientTLS)
// so that every party speaks the same TLS 1.3 profile.
//
// It must not import gateway, engine or connect: they consume it.
package certs
