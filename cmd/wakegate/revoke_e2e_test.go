package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/wakegate/wakegate/connect"
)

// TestCertsRevokeThroughARunningGateway: with a gateway serving the CA,
// 'certs revoke' goes through its API. A hex or zero-padded serial used to
// be refused or recorded as given (revoking nothing), an unknown serial
// "succeeded", a flag after a serial was taken for a serial, and --kill did
// not say what it closed.
func TestCertsRevokeThroughARunningGateway(t *testing.T) {
	g := startCertGateway(t)

	for _, form := range serialFormNames {
		t.Run(form+" serial revokes its certificate and the gateway refuses it", func(t *testing.T) {
			creds, serial := issueCreds(t, g.caDir, "job-"+form)
			if out, err := g.connectWait(t, "--creds", creds); err != nil {
				t.Fatalf("connect before revocation: %v\n%s", err, out)
			}
			out := mustRun(t, "certs", "revoke", "--dir", g.caDir, serialAs(form, serial))
			if want := fmt.Sprintf("revoked %s (job-%s)\n", serial, form); out != want {
				t.Errorf("certs revoke %s printed %q, want %q", serialAs(form, serial), out, want)
			}
			if _, err := g.connectWait(t, "--creds", creds); !errors.Is(err, connect.ErrRefused) {
				t.Fatalf("connect after revoking %s = %v, want a refusal", serialAs(form, serial), err)
			}
		})
	}
	t.Run("an unknown serial fails", func(t *testing.T) {
		out, err := runErr(t, "certs", "revoke", "--dir", g.caDir, "0x1234")
		if err == nil || !strings.Contains(err.Error(), "no certificate with serial 4660 in this CA") {
			t.Fatalf("certs revoke of an unknown serial = %v\n%s\nwant an error naming 4660", err, out)
		}
	})
	t.Run("a flag after the serial fails and the certificate stays valid", func(t *testing.T) {
		creds, serial := issueCreds(t, g.caDir, "flag-after")
		out, err := runErr(t, "certs", "revoke", "--dir", g.caDir, serial, "--kill")
		if err == nil || !strings.Contains(err.Error(), "flags go before the serials") {
			t.Fatalf("certs revoke SERIAL --kill = %v\n%s\nwant an error saying flags go first", err, out)
		}
		if out, err := g.connectWait(t, "--creds", creds); err != nil {
			t.Fatalf("connect after a refused revoke: %v\n%s", err, out)
		}
	})
	t.Run("kill says how many open connections it closed", func(t *testing.T) {
		creds, serial := issueCreds(t, g.caDir, "killed")
		sc := background(t, "connect", "--gateway", g.addr, "--creds", creds, "--listen", "127.0.0.1:0")
		m, _ := sc.waitFor(t, sidecarRE, 0, 10*time.Second)
		bk, err := client.New(t.Context(), "tcp://"+m[1])
		if err != nil {
			t.Fatal(err)
		}
		defer bk.Close()
		if _, err := bk.ListWorkers(t.Context()); err != nil {
			t.Fatalf("ListWorkers before revocation: %v", err)
		}
		from := g.logs.len()
		out := mustRun(t, "certs", "revoke", "--dir", g.caDir, "--kill", serial)
		got := regexp.MustCompile(`^revoked ` + serial + ` \(killed\); closed (\d+) open connections?\n$`).FindStringSubmatch(out)
		if got == nil || got[1] == "0" {
			t.Fatalf("certs revoke --kill printed %q, want the open connections it closed", out)
		}
		logged, _ := g.logs.waitFor(t, regexp.MustCompile(`closed connections of a revoked certificate" serial=`+serial+` connections=(\d+)`), from, 5*time.Second)
		if logged[1] != got[1] {
			t.Errorf("certs revoke --kill says it closed %s connections, the gateway logged %s", got[1], logged[1])
		}
	})
}
