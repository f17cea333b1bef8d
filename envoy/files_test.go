package envoy_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/wakegate/wakegate/envoy"
	"github.com/wakegate/wakegate/envoy/envoytest"
)

// TestWriteCredsRenamesNewFilesIntoPlaceAndKeepsTheKeyPrivate: a renewal
// replaces each file by a rename (a new inode: what Envoy's
// watched_directory sees), the key is 0600 from its first byte on, nothing
// temporary is left, and the SDS files then resolve to the new certificate.
func TestWriteCredsRenamesNewFilesIntoPlaceAndKeepsTheKeyPrivate(t *testing.T) {
	ca := newTestCA(t)
	for _, role := range []envoy.Role{envoy.Client, envoy.Engine} {
		t.Run(string(role), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "creds")
			f := envoy.FilesFor(role)
			first := ca.issue(t, leaf{name: "one", usage: clientAuth})
			if err := envoy.WriteCreds(role, dir, first, ca.roots()); err != nil {
				t.Fatal(err)
			}
			if err := envoy.CheckCreds(role, dir); err != nil {
				t.Fatal(err)
			}
			if err := envoy.WriteSDSFiles(role, dir); err != nil {
				t.Fatal(err)
			}
			inodes := map[string]uint64{}
			for _, name := range []string{f.Cert, f.Key, f.CA} {
				inodes[name] = inode(t, filepath.Join(dir, name))
			}
			second := ca.issue(t, leaf{name: "two", usage: clientAuth})
			if err := envoy.WriteCreds(role, dir, second, ca.roots()); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{f.Cert, f.Key, f.CA} {
				if inode(t, filepath.Join(dir, name)) == inodes[name] {
					t.Errorf("%s rewritten in place; Envoy's directory watch only sees renames", name)
				}
			}
			fi, err := os.Stat(filepath.Join(dir, f.Key))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("key mode %v, want 0600", fi.Mode().Perm())
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".") {
					t.Errorf("temporary file %s left behind", e.Name())
				}
			}
			c := envoy.Config{Role: role, Listen: "127.0.0.1:9080", Gateway: "gateway.test:8443"}
			if role == envoy.Engine {
				c = envoy.Config{Role: role, Listen: "127.0.0.1:8372", Upstream: "unix:///run/bk.sock"}
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := presented(t, c, dir); got != "two" {
				t.Fatalf("the SDS files resolve to %q, want the renewed certificate", got)
			}
		})
	}
}

func TestCheckCredsSaysHowToWriteMissingFiles(t *testing.T) {
	dir := t.TempDir()
	err := envoy.CheckCreds(envoy.Client, dir)
	if err == nil || !strings.Contains(err.Error(), "has no client.crt") || !strings.Contains(err.Error(), "wakegate certs issue --out "+dir) {
		t.Fatalf("CheckCreds on an empty directory = %v", err)
	}
	err = envoy.CheckCreds(envoy.Engine, dir)
	if err == nil || !strings.Contains(err.Error(), "has no engine.crt") || !strings.Contains(err.Error(), "wakegate envoy creds --role engine --out "+dir) {
		t.Fatalf("CheckCreds(engine) on an empty directory = %v", err)
	}
}

// presented is the common name of the certificate Envoy would present
// with c's resources, reading the credentials directory dir.
func presented(t *testing.T, c envoy.Config, dir string) string {
	t.Helper()
	if c.Role == envoy.Client {
		clusters, err := c.Clusters(envoy.Secrets{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		tc, err := envoytest.ClientTLS(clusters[0], envoytest.Secrets{})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := tc.GetClientCertificate(nil)
		return got.Leaf.Subject.CommonName
	}
	l, err := c.Listener(envoy.Secrets{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := envoytest.ServerTLS(l, envoytest.Secrets{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := tc.GetConfigForClient(&tls.ClientHelloInfo{SupportedProtos: []string{"wakegate-proxy/1"}})
	if err != nil {
		t.Fatal(err)
	}
	return inner.Certificates[0].Leaf.Subject.CommonName
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}
