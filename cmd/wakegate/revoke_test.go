package main

import (
	"fmt"
	"math/big"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var issuedSerialRE = regexp.MustCompile(`\(serial (\d+)\)`)

// issueCreds issues credentials for name from the CA in dir and returns
// where they are and the certificate's serial (decimal).
func issueCreds(t *testing.T, dir, name string) (creds, serial string) {
	t.Helper()
	creds = filepath.Join(t.TempDir(), name)
	m := issuedSerialRE.FindStringSubmatch(mustRun(t, "certs", "issue", "--dir", dir, "--name", name, "--out", creds))
	if m == nil {
		t.Fatalf("certs issue printed no serial")
	}
	return creds, m[1]
}

// serialAs spells serial (decimal) in one of the forms 'certs revoke'
// reads: "hex" (0x…), "colon-hex" (as openssl prints it) or "zero-padded".
func serialAs(form, serial string) string {
	n, _ := new(big.Int).SetString(serial, 10)
	switch form {
	case "hex":
		return "0x" + n.Text(16)
	case "colon-hex":
		var b []string
		for _, x := range n.Bytes() {
			b = append(b, fmt.Sprintf("%02X", x))
		}
		return strings.Join(b, ":")
	case "zero-padded":
		return "000" + serial
	}
	panic(form)
}

var serialFormNames = []string{"hex", "colon-hex", "zero-padded"}

// certStatus is a certificate's status in 'certs list'.
func certStatus(t *testing.T, dir, serial string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + serial + `\s+\S+\s+\S+\s+(\S+)`).FindStringSubmatch(mustRun(t, "certs", "list", "--dir", dir))
	if m == nil {
		t.Fatalf("certs list does not show %s", serial)
	}
	return m[1]
}

func runErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out := newLogWatch()
	err := run(t.Context(), args, out, out)
	return out.String(), err
}

// TestCertsRevokeWithoutAGateway: with the database opened in-process, a
// hex or zero-padded serial used to print "revoked" and revoke nothing, an
// unknown serial "succeeded", and flags after a serial were taken for
// serials.
func TestCertsRevokeWithoutAGateway(t *testing.T) {
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	dir := filepath.Join(t.TempDir(), "ca")
	mustRun(t, "certs", "init", "--dir", dir, "--no-password")

	for _, form := range serialFormNames {
		t.Run(form+" serial revokes its certificate", func(t *testing.T) {
			_, serial := issueCreds(t, dir, "job-"+form)
			out := mustRun(t, "certs", "revoke", "--dir", dir, serialAs(form, serial))
			if want := fmt.Sprintf("revoked %s (job-%s)\n", serial, form); out != want {
				t.Errorf("certs revoke %s printed %q, want %q", serialAs(form, serial), out, want)
			}
			if got := certStatus(t, dir, serial); got != "revoked" {
				t.Errorf("certs list shows %s %s after revoking it as %s", serial, got, serialAs(form, serial))
			}
		})
	}
	t.Run("an unknown serial fails and nothing is revoked", func(t *testing.T) {
		_, serial := issueCreds(t, dir, "bystander")
		out, err := runErr(t, "certs", "revoke", "--dir", dir, serial, "0x1234")
		if err == nil || !strings.Contains(err.Error(), "no certificate with serial 4660 in this CA") {
			t.Fatalf("certs revoke of an unknown serial = %v\n%s\nwant an error naming 4660", err, out)
		}
		if got := certStatus(t, dir, serial); got != "valid" {
			t.Errorf("%s, given with an unknown serial, is %s; want nothing revoked", serial, got)
		}
	})
	t.Run("a flag after the serials fails and nothing is revoked", func(t *testing.T) {
		_, serial := issueCreds(t, dir, "flag-after")
		for _, args := range [][]string{{serial, "--kill"}, {serial, "--reason", "x"}, {serial, "-kill"}} {
			out, err := runErr(t, append([]string{"certs", "revoke", "--dir", dir}, args...)...)
			if err == nil || !strings.Contains(err.Error(), "flags go before the serials: wakegate certs revoke [flags] SERIAL...") {
				t.Fatalf("certs revoke %s = %v\n%s\nwant an error saying flags go first", strings.Join(args, " "), err, out)
			}
		}
		if got := certStatus(t, dir, serial); got != "valid" {
			t.Errorf("%s is %s after refused commands; want valid", serial, got)
		}
	})
	t.Run("not a serial", func(t *testing.T) {
		if _, err := runErr(t, "certs", "revoke", "--dir", dir, "5e1aff"); err == nil || !strings.Contains(err.Error(), "write 0x5e1aff") {
			t.Fatalf("certs revoke of bare hex = %v, want a hint to write 0x", err)
		}
	})
	t.Run("kill says no gateway held connections", func(t *testing.T) {
		_, serial := issueCreds(t, dir, "offline-kill")
		out := mustRun(t, "certs", "revoke", "--dir", dir, "--kill", serial)
		if !strings.Contains(out, "revoked "+serial+" (offline-kill); no gateway is serving this CA") {
			t.Errorf("certs revoke --kill without a gateway printed %q", out)
		}
	})
}
