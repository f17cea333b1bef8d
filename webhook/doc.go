// Package webhook receives GitHub's workflow_job webhook and pre-wakes the
// engine a queued job's repository will connect to, so that its first build
// meets a warm engine. It owns the delivery's checks (the body's size, the
// X-Hub-Signature-256 HMAC compared in constant time, the X-GitHub-Delivery
// id against a bounded replay cache, the job's age), the payload's parsing,
// and the decision: it consumes a Prewaker (the gateway's pool) and the
// policy as a function, both given by cmd, and reports every decision to a
// counter and the log.
//
// It imports only identity, whose AffinityKey is the placement key of a
// repository's connections: no other wakegate package. It must not import
// gateway, certs, engine, fly or cmd; they wire it, or have no part in it.
package webhook
