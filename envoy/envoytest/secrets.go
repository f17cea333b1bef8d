package envoytest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// Secrets resolves a reference to a secret as Envoy would: over ADS from
// the secrets the server sent, or from the SDS file a path config source
// names.
type Secrets struct {
	// ADS are the secrets received over ADS, by name.
	ADS map[string]*tlsv3.Secret
}

// FromADS holds secrets received over ADS.
func FromADS(secrets ...*tlsv3.Secret) Secrets {
	s := Secrets{ADS: map[string]*tlsv3.Secret{}}
	for _, x := range secrets {
		s.ADS[x.GetName()] = x
	}
	return s
}

// Resolve finds the secret ref names.
func (s Secrets) Resolve(ref *tlsv3.SdsSecretConfig) (*tlsv3.Secret, error) {
	src := ref.GetSdsConfig()
	switch {
	case src == nil:
		return nil, fmt.Errorf("secret %q: a static secret; wakegate's configuration names none", ref.GetName())
	case src.GetAds() != nil:
		x, ok := s.ADS[ref.GetName()]
		if !ok {
			return nil, fmt.Errorf("secret %q: not received over ADS", ref.GetName())
		}
		return x, nil
	case src.GetPathConfigSource() != nil:
		return fromFile(ref.GetName(), src.GetPathConfigSource().GetPath())
	}
	return nil, fmt.Errorf("secret %q: config source %v not understood", ref.GetName(), src)
}

// fromFile reads an SDS file as Envoy's filesystem subscription does: a
// DiscoveryResponse holding exactly one secret, of the name asked for.
func fromFile(name, path string) (*tlsv3.Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	var resp discovery.DiscoveryResponse
	if err := protojson.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("secret %q: %s: %w", name, path, err)
	}
	if n := len(resp.GetResources()); n != 1 {
		return nil, fmt.Errorf("secret %q: %s holds %d resources, Envoy wants 1", name, path, n)
	}
	var x tlsv3.Secret
	if err := resp.GetResources()[0].UnmarshalTo(&x); err != nil {
		return nil, fmt.Errorf("secret %q: %s: %w", name, path, err)
	}
	if x.GetName() != name {
		return nil, fmt.Errorf("secret %q: %s holds secret %q", name, path, x.GetName())
	}
	return &x, x.ValidateAll()
}

// data reads a DataSource: inline, or the file it names.
func data(d *core.DataSource) ([]byte, error) {
	switch {
	case d == nil:
		return nil, errors.New("no data source")
	case d.GetFilename() != "":
		return os.ReadFile(d.GetFilename())
	case d.GetInlineBytes() != nil:
		return d.GetInlineBytes(), nil
	case d.GetInlineString() != "":
		return []byte(d.GetInlineString()), nil
	}
	return nil, fmt.Errorf("data source %v not understood", d)
}

// certificate loads the TlsCertificate secret ref names.
func (s Secrets) certificate(refs []*tlsv3.SdsSecretConfig) (tls.Certificate, error) {
	if len(refs) != 1 {
		return tls.Certificate{}, fmt.Errorf("%d certificate secrets, want 1", len(refs))
	}
	x, err := s.Resolve(refs[0])
	if err != nil {
		return tls.Certificate{}, err
	}
	tc := x.GetTlsCertificate()
	if tc == nil {
		return tls.Certificate{}, fmt.Errorf("secret %q holds no certificate", x.GetName())
	}
	chain, err := data(tc.GetCertificateChain())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("secret %q chain: %w", x.GetName(), err)
	}
	key, err := data(tc.GetPrivateKey())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("secret %q key: %w", x.GetName(), err)
	}
	return tls.X509KeyPair(chain, key)
}

// validation is a validation context in effect: the trust bundle and
// the SAN matchers.
type validation struct {
	roots *x509.CertPool
	sans  []*tlsv3.SubjectAltNameMatcher
}

// validation merges a combined validation context as Envoy does: the
// default's matchers, the SDS secret's trusted CA.
func (s Secrets) validation(c *tlsv3.CommonTlsContext) (*validation, error) {
	combined := c.GetCombinedValidationContext()
	if combined == nil {
		return nil, errors.New("no combined validation context: peers would not be checked")
	}
	x, err := s.Resolve(combined.GetValidationContextSdsSecretConfig())
	if err != nil {
		return nil, err
	}
	vc := x.GetValidationContext()
	if vc == nil {
		return nil, fmt.Errorf("secret %q holds no validation context", x.GetName())
	}
	bundle, err := data(vc.GetTrustedCa())
	if err != nil {
		return nil, fmt.Errorf("secret %q trusted CA: %w", x.GetName(), err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return nil, fmt.Errorf("secret %q: no certificate in the trusted CA", x.GetName())
	}
	sans := append(combined.GetDefaultValidationContext().GetMatchTypedSubjectAltNames(), vc.GetMatchTypedSubjectAltNames()...)
	return &validation{roots: roots, sans: sans}, nil
}
