package main

import (
	"strings"
	"testing"

	"github.com/wakegate/wakegate/gateway"
	"github.com/wakegate/wakegate/webhook"
	"github.com/wakegate/wakegate/wire"
)

// TestGatewayHelpListsEveryEndpoint: 'wakegate help gateway' names each
// listener and everything served on it: both ALPN protocols of the mTLS
// port, the CA API's paths (smallstep's and the operator's), the webhook,
// and every admin path.
func TestGatewayHelpListsEveryEndpoint(t *testing.T) {
	for _, args := range [][]string{{"help", "gateway"}, {"gateway", "-h"}} {
		out := newLogWatch()
		if err := run(t.Context(), args, out, out); err != nil {
			t.Fatalf("wakegate %s: %v", strings.Join(args, " "), err)
		}
		help := out.String()
		want := []string{"Endpoints:", "--listen ", "--ca-listen ", "--admin ", wire.ProtoProxy, wire.ProtoWake,
			"/sign", "/renew", "/revoke", "/roots", "/provisioners", "/wakegate/v1/certs", "/wakegate/v1/revoked", webhook.Path}
		want = append(want, gateway.AdminPaths...)
		for _, w := range want {
			if !strings.Contains(help, w) {
				t.Errorf("wakegate %s does not mention %q:\n%s", strings.Join(args, " "), w, help)
			}
		}
	}
}
