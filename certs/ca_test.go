package certs_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wakegate/wakegate/certs"
)

// newCA creates a fresh CA in a temporary directory.
func newCA(t *testing.T, name string) *certs.CA {
	t.Helper()
	ca, err := certs.Init(t.TempDir(), name, nil)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return ca
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	return fi.Mode().Perm()
}

func TestInitCreatesRootAndIntermediate(t *testing.T) {
	ca := newCA(t, "Test")

	if !ca.Root.IsCA || ca.Root.Subject.CommonName != "Test Root CA" {
		t.Errorf("root: IsCA=%v CN=%q, want a CA named %q", ca.Root.IsCA, ca.Root.Subject.CommonName, "Test Root CA")
	}
	if err := ca.Root.CheckSignatureFrom(ca.Root); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if !ca.Intermediate.IsCA || ca.Intermediate.Subject.CommonName != "Test Intermediate CA" {
		t.Errorf("intermediate: IsCA=%v CN=%q, want a CA named %q", ca.Intermediate.IsCA, ca.Intermediate.Subject.CommonName, "Test Intermediate CA")
	}
	if err := ca.Intermediate.CheckSignatureFrom(ca.Root); err != nil {
		t.Errorf("intermediate is not signed by the root: %v", err)
	}
	if _, err := ca.Intermediate.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("intermediate does not chain to the pool: %v", err)
	}
	if ca.Pool().Equal(x509.NewCertPool()) {
		t.Errorf("Pool is empty")
	}

	// The files on disk are the certificates returned.
	for path, want := range map[string]*x509.Certificate{
		"certs/root_ca.crt":         ca.Root,
		"certs/intermediate_ca.crt": ca.Intermediate,
	} {
		data, err := os.ReadFile(filepath.Join(ca.Dir, path))
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "CERTIFICATE" {
			t.Fatalf("%s is not a PEM certificate", path)
		}
		if !bytes.Equal(block.Bytes, want.Raw) {
			t.Errorf("%s does not hold the certificate Init returned", path)
		}
	}
}

func TestInitKeepsKeysPrivate(t *testing.T) {
	ca := newCA(t, "Test")
	tests := []struct {
		path string
		want fs.FileMode
	}{
		{"secrets", 0o700},
		{"secrets/root_ca_key", 0o600},
		{"secrets/intermediate_ca_key", 0o600},
		{"certs/root_ca.crt", 0o644},
		{"certs/intermediate_ca.crt", 0o644},
	}
	for _, tt := range tests {
		if got := mode(t, filepath.Join(ca.Dir, tt.path)); got != tt.want {
			t.Errorf("%s has mode %v, want %v", tt.path, got, tt.want)
		}
	}
	// No temporary files are left behind by the atomic writes.
	for _, sub := range []string{"certs", "secrets"} {
		entries, err := os.ReadDir(filepath.Join(ca.Dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("leftover temporary file %s/%s", sub, e.Name())
			}
		}
	}
}

func TestInitRefusesToOverwriteExistingCA(t *testing.T) {
	ca := newCA(t, "First")
	files := []string{"certs/root_ca.crt", "certs/intermediate_ca.crt", "secrets/root_ca_key", "secrets/intermediate_ca_key"}
	before := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(ca.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		before[f] = data
	}

	again, err := certs.Init(ca.Dir, "Second", nil)
	if err == nil {
		t.Fatalf("second Init in the same directory succeeded (root %q)", again.Root.Subject.CommonName)
	}
	if !strings.Contains(err.Error(), "already exists") {
		t.Errorf("error %q does not say a CA already exists", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(ca.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, before[f]) {
			t.Errorf("%s changed after the refused Init", f)
		}
	}
}

func TestLoadOfEmptyDirIsNotInitialized(t *testing.T) {
	for name, dir := range map[string]string{
		"empty":   t.TempDir(),
		"missing": filepath.Join(t.TempDir(), "nope"),
	} {
		t.Run(name, func(t *testing.T) {
			ca, err := certs.Load(dir, nil)
			if !errors.Is(err, certs.ErrNotInitialized) {
				t.Fatalf("Load = %v, %v; want an error wrapping ErrNotInitialized", ca, err)
			}
		})
	}
}

func TestLoadReportsMissingIntermediateKey(t *testing.T) {
	ca := newCA(t, "Test")
	if err := os.Remove(filepath.Join(ca.Dir, "secrets/intermediate_ca_key")); err != nil {
		t.Fatal(err)
	}
	_, err := certs.Load(ca.Dir, nil)
	if err == nil {
		t.Fatal("Load succeeded without the intermediate key")
	}
	if errors.Is(err, certs.ErrNotInitialized) {
		t.Errorf("a half-present CA is reported as not initialized: %v", err)
	}
}

func TestLoadRoundTripsInit(t *testing.T) {
	ca := newCA(t, "Test")
	loaded, err := certs.Load(ca.Dir, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if loaded.Fingerprint() != ca.Fingerprint() {
		t.Errorf("fingerprint %s after Load, want %s", loaded.Fingerprint(), ca.Fingerprint())
	}
	if len(ca.Fingerprint()) != 64 {
		t.Errorf("fingerprint %q is not SHA-256 hex", ca.Fingerprint())
	}
	if !loaded.Root.Equal(ca.Root) || !loaded.Intermediate.Equal(ca.Intermediate) {
		t.Errorf("loaded certificates differ from those Init made")
	}
	if loaded.Dir != ca.Dir {
		t.Errorf("Dir = %q, want %q", loaded.Dir, ca.Dir)
	}
	// The loaded key is the intermediate's: what it issues verifies against
	// the original CA.
	leaf, err := loaded.Issue(certs.Client, "after-load", nil, certs.DefaultClientTTL)
	if err != nil {
		t.Fatalf("Issue from loaded CA: %v", err)
	}
	if err := leaf.Cert.CheckSignatureFrom(ca.Intermediate); err != nil {
		t.Errorf("leaf from loaded CA not signed by the intermediate: %v", err)
	}
}

func TestFingerprintDiffersBetweenCAs(t *testing.T) {
	if a, b := newCA(t, "A"), newCA(t, "B"); a.Fingerprint() == b.Fingerprint() {
		t.Fatalf("two CAs share fingerprint %s", a.Fingerprint())
	}
}
