package certs_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/identity"
)

// profile is what a certificate is for and names: what the two issuing
// paths must agree on.
func profile(l *certs.Leaf) string {
	c := l.Cert
	var ips, uris []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	slices.Sort(ips)
	slices.Sort(uris)
	dns := slices.Sorted(slices.Values(c.DNSNames))
	return fmt.Sprintf("cn=%s ku=%v eku=%v dns=%v ip=%v uri=%v ca=%v", c.Subject.CommonName, c.KeyUsage, c.ExtKeyUsage, dns, ips, uris, c.IsCA)
}

// TestOfflineIssueIsTheAuthoritysProfile: the offline path that tests and
// tools use (CA.Issue) issues what the embedded authority's provisioners
// issue in production, and refuses what they refuse.
func TestOfflineIssueIsTheAuthoritysProfile(t *testing.T) {
	ca := newCA(t, "Test")
	a, err := ca.OpenAuthority(certs.AuthorityConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for _, tc := range []struct {
		name string
		kind certs.Kind
		cn   string
		sans []string
	}{
		{"a client", certs.Client, "ci-job", []string{"ignored.example", "10.0.0.1"}},
		{"a client of a repository", certs.Client, "ci-job", []string{identity.RepoURI("acme/app"), "ignored.example"}},
		{"a server", certs.Server, "localhost", []string{"127.0.0.1", "localhost", "gw.example"}},
		{"an engine", certs.Server, identity.EngineName("0"), nil},
		{"the gateway", certs.Server, identity.GatewayName, []string{"127.0.0.1", "localhost"}},
	} {
		offline, err := ca.Issue(tc.kind, tc.cn, tc.sans, time.Hour)
		if err != nil {
			t.Fatalf("%s: CA.Issue: %v", tc.name, err)
		}
		online, err := a.Issue(t.Context(), tc.kind, tc.cn, tc.sans, time.Hour)
		if err != nil {
			t.Fatalf("%s: Authority.Issue: %v", tc.name, err)
		}
		if got, want := profile(offline), profile(online); got != want {
			t.Errorf("%s:\n offline %s\nauthority %s", tc.name, got, want)
		}
	}
	for _, cn := range []string{identity.GatewayName, identity.EngineName("0")} {
		if _, err := ca.Issue(certs.Client, cn, nil, time.Hour); !errors.Is(err, certs.ErrReservedName) {
			t.Errorf("CA.Issue of a client named %s = %v, want ErrReservedName as the authority refuses it", cn, err)
		}
		if _, err := a.Issue(t.Context(), certs.Client, cn, nil, time.Hour); !errors.Is(err, certs.ErrReservedName) {
			t.Errorf("Authority.Issue of a client named %s = %v, want ErrReservedName", cn, err)
		}
	}
}
