package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

func TestConnectGatewayFlagErrorsNameTheFlagAndAnExample(t *testing.T) {
	t.Setenv("WAKEGATE_TOKEN", "")
	for _, tc := range []struct {
		gateways []string // one --gateway per value
		want     string
	}{
		{[]string{","}, "--gateway: an empty gateway address"},
		{[]string{"gw.example.com"}, `--gateway: gateway address "gw.example.com": want HOST:PORT`},
		{[]string{"h:1", ""}, "--gateway: an empty gateway address"},
		{[]string{"h:1,:2"}, `--gateway: gateway address ":2" has no host`},
	} {
		args := []string{"connect", "--creds", "/nonexistent"}
		for _, g := range tc.gateways {
			args = append(args, "--gateway", g)
		}
		out := newLogWatch()
		err := run(t.Context(), args, out, out)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "e.g. gw1.example.com:8443,gw2.example.com:8443") ||
			strings.Contains(err.Error(), "\n") {
			t.Errorf("wakegate %s = %v; want one line with %q and an example", strings.Join(args, " "), err, tc.want)
		}
	}
}

// A gateway that is down (a rolling restart) is passed over for the next
// one, however the addresses are given, and the log says so.
func TestConnectFailsOverToTheNextGateway(t *testing.T) {
	g := startCertGateway(t)
	creds := filepath.Join(t.TempDir(), "creds")
	mustRun(t, "certs", "issue", "--dir", g.caDir, "--name", "ci-job", "--out", creds)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()

	for name, gateways := range map[string][]string{
		"joined by a comma": {"--gateway", down + "," + g.addr},
		"flag repeated":     {"--gateway", down, "--gateway", g.addr},
	} {
		t.Run(name, func(t *testing.T) {
			out := newLogWatch()
			args := append([]string{"connect", "--wait", "--wait-timeout", "60s", "--creds", creds}, gateways...)
			if err := run(t.Context(), args, out, out); err != nil {
				t.Fatalf("connect with %s down: %v\n%s", down, err, out)
			}
			if want := `msg="gateway failover" from=` + down + " to=" + g.addr; !strings.Contains(out.String(), want) {
				t.Fatalf("connect's log has no line %q:\n%s", want, out)
			}
		})
	}
}
