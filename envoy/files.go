package envoy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/wakegate/wakegate/certs"
)

// Files are the names of a credentials directory's files.
type Files struct {
	Cert string // the certificate and its intermediate
	Key  string // its private key, mode 0600
	CA   string // the CA root to trust
}

// FilesFor is the layout of role's credentials directory. The client
// role's is what 'wakegate certs issue --out' writes and 'wakegate connect
// --creds' reads.
func FilesFor(r Role) Files {
	if r == Engine {
		return Files{Cert: "engine.crt", Key: "engine.key", CA: certs.CACertFile}
	}
	return Files{Cert: certs.ClientCertFile, Key: certs.ClientKeyFile, CA: certs.CACertFile}
}

// SDS files Envoy reads in a credentials directory: each names the files
// of one secret. They hold paths only, no secret.
var sdsFile = map[string]string{
	CertSecret:  "envoy-sds-cert.json",
	TrustSecret: "envoy-sds-ca.json",
}

func sdsPath(dir, secret string) string { return filepath.Join(dir, sdsFile[secret]) }

// CheckCreds reports a credentials directory that lacks a file role
// needs, with what to do about it.
func CheckCreds(r Role, dir string) error {
	f := FilesFor(r)
	for _, name := range []string{f.Cert, f.Key, f.CA} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			how := "'wakegate certs issue --out " + dir + "'"
			if r == Engine {
				how = "'wakegate envoy creds --role engine --out " + dir + "'"
			}
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("credentials directory %s has no %s: write the credentials with %s, or keep them fresh with 'wakegate envoy creds --out %s'", dir, name, how, dir)
			}
			return fmt.Errorf("credentials directory %s: %w", dir, err)
		}
	}
	return nil
}

// SDSFiles are the SDS files Envoy reads in dir for role, by file name:
// the certificate names role's certificate and key files, the trust
// bundle its CA file, each watched through dir.
func SDSFiles(r Role, dir string) (map[string][]byte, error) {
	f := FilesFor(r)
	watched := watchedDir(dir)
	out := map[string][]byte{}
	for _, s := range []*tlsv3.Secret{
		{Name: CertSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: file(filepath.Join(dir, f.Cert)),
			PrivateKey:       file(filepath.Join(dir, f.Key)),
			WatchedDirectory: watched,
		}}},
		{Name: TrustSecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa:        file(filepath.Join(dir, f.CA)),
			WatchedDirectory: watched,
		}}},
	} {
		if err := check("secret "+s.Name, s); err != nil {
			return nil, err
		}
		a, err := anypb.New(s)
		if err != nil {
			return nil, fmt.Errorf("envoy secret %s: %w", s.Name, err)
		}
		resp := &discovery.DiscoveryResponse{Resources: []*anypb.Any{a}}
		if err := check("sds file "+s.Name, resp); err != nil {
			return nil, err
		}
		b, err := MarshalJSON(resp, &discovery.DiscoveryResponse{})
		if err != nil {
			return nil, err
		}
		out[sdsFile[s.Name]] = b
	}
	return out, nil
}

// WriteSDSFiles writes SDSFiles into dir.
func WriteSDSFiles(r Role, dir string) error {
	files, err := SDSFiles(r, dir)
	if err != nil {
		return err
	}
	for name, b := range files {
		if err := writeAtomic(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// WriteCreds writes cert, its key (0600) and roots into dir under role's
// names. Each file is renamed into place, which is what Envoy's watch on
// dir reacts to. The key goes first and the certificate second: between
// the two Envoy may read a pair that does not match, refuse it and keep
// the old one, then take the new pair at the second rename.
func WriteCreds(r Role, dir string, cert *tls.Certificate, roots []*x509.Certificate) error {
	chain, key, err := CertPEM(cert)
	if err != nil {
		return fmt.Errorf("write credentials to %s: %w", dir, err)
	}
	bundle, err := RootsPEM(roots)
	if err != nil {
		return fmt.Errorf("write credentials to %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	f := FilesFor(r)
	for _, w := range []struct {
		name string
		data []byte
		perm fs.FileMode
	}{{f.CA, bundle, 0o644}, {f.Key, key, 0o600}, {f.Cert, chain, 0o644}} {
		if err := writeAtomic(filepath.Join(dir, w.name), w.data, w.perm); err != nil {
			return err
		}
	}
	return nil
}

func watchedDir(dir string) *core.WatchedDirectory { return &core.WatchedDirectory{Path: dir} }

// writeAtomic writes data to a temporary file in path's directory with
// mode perm from the start, then renames it onto path, so a reader sees
// the old file or the new one, never a part, and a key is never readable
// by others even for a moment.
func writeAtomic(path string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a failure; renamed away otherwise
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
