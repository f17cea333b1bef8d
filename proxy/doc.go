// Package proxy is the one two-way copy loop of wakegate, shared by the
// gateway (client TLS ↔ engine) and connect (local TCP ↔ gateway TLS).
// Each direction copies and then half-closes its destination, so a peer that
// finishes sending (CloseWrite) is seen as EOF on the far side while the
// reply still flows; a pair left half-open is reaped after a bound. Join
// waits for the pair; Start does not, and calls back when it has ended.
//
// Server is the one lifecycle of both servers around it: accept loops on
// any number of listeners (backing off on temporary errors), a goroutine
// per connection (whose handler may Keep the connection past its return),
// and a Shutdown that stops accepting, lets connections drain within a
// bound and then forces them closed, safe to call twice.
//
// It must not import any other wakegate package.
package proxy
