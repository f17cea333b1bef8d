// Package policy decides who may connect to the gateway. A policy file lists
// [[allow]] rules; a CI job enrolled with an OIDC token is judged by the
// rules that name repositories (and optionally its ref, workflow, event and
// environment), an identity an operator issued by the rules that name
// identities. Anything no rule allows is refused.
//
// It owns the file format (parsing, and problems reported with the line to
// fix), matching a peer against the rules (and a job GitHub reports queued,
// for a pre-wake: AllowQueued), and the Watcher that reloads the file for a
// running gateway.
//
// It imports only identity, the TOML library (go-toml) and doublestar: no
// other wakegate package, so the gateway and the CLI's 'policy check' share
// it without linking each other.
package policy
