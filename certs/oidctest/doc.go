// Package oidctest is test support: an in-process emulator of GitHub
// Actions' OIDC issuer (token.actions.githubusercontent.com) and of a job's
// ID-token request endpoint (ACTIONS_ID_TOKEN_REQUEST_URL), as fly/flytest
// emulates the Fly API. GitHub's issuer has no local form, so tests of the
// verifier and of the in-job client run against this instead.
//
// An Issuer serves OpenID discovery and a JWKS over HTTPS on 127.0.0.1,
// signs RS256 tokens carrying GitHub's claim set, rotates keys the hard way
// (the JWKS publishes only the new key), counts fetches and can be taken
// down (503). It also mints the tokens a verifier must refuse: signed by a
// key it never published, or by another, untrusted issuer. A Job is the
// endpoint a workflow job asks for tokens: its URL already holds a query
// string, it wants "Authorization: bearer REQUEST_TOKEN", and it mints a
// fresh token for the requested audience on every request.
//
// All servers present certificates from one test root CA per process,
// written once to a PEM file (TrustFile, for SSL_CERT_FILE in child
// processes; Go reads SSL_CERT_FILE only once per process) and available
// as a pool (TrustPool). Servers close on t.Cleanup.
//
// Production code must not import this package. It imports only the
// standard library and go.step.sm/crypto/jose; it must not import other
// wakegate packages.
package oidctest
