package main

import (
	"fmt"
	"strings"

	"github.com/wakegate/wakegate/gateway"
	"github.com/wakegate/wakegate/webhook"
	"github.com/wakegate/wakegate/wire"
)

// gatewayEndpoints is the part of 'wakegate help gateway' that lists every
// address and path the gateway serves, from the constants that serve them.
func gatewayEndpoints() string {
	var b strings.Builder
	fmt.Fprintf(&b, `Endpoints:
  --listen      mTLS (TLS 1.3, a client certificate of the CA required)
                  ALPN %s (or none): the stream, proxied to the client's engine
                  ALPN %s: wake the client's engine, report progress, and
                  keep it awake while the connection stays open (connect does
                  this before its command runs)
                  ALPN %s: a stream made ahead of need (connect's
                  spares): proxied like the first, but its engine is chosen
                  and woken only at the client's first byte; unused for %s,
                  it is closed
  --ca-listen   HTTPS (a client certificate only to renew); "" serves none
                  smallstep's CA API at / and /1.0: POST /sign, /renew, /rekey,
                  /revoke; GET /roots, /root/SHA256, /provisioners, /crl,
                  /health, /version
                  GET /wakegate/v1/certs: issued certificates, for 'certs list'
                  while a gateway runs (an operator's token)
                  GET /wakegate/v1/revoked: revoked serials, public, which
                  engines poll to refuse a revoked gateway
                  POST %s: GitHub workflow_job deliveries (with
                  --github-webhook-secret-file)
  --admin       plain HTTP, read-only; keep it on loopback or a private network
                  GET %s
                  (docs/operations.md)`, wire.ProtoProxy, wire.ProtoWake, wire.ProtoAhead, gateway.DefaultAheadIdleTimeout, webhook.Path, strings.Join(gateway.AdminPaths, " "))
	return b.String()
}
