package envoy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a root and an intermediate, as wakegate's CA has, issuing
// leaves whose usages and SANs a test chooses: the profiles Envoy must
// admit and the ones it must refuse.
type testCA struct {
	root, inter *x509.Certificate
	interKey    *ecdsa.PrivateKey
}

var serials atomic.Int64

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	rootKey := newKey(t)
	root := sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "test root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	}, nil, rootKey, rootKey)
	interKey := newKey(t)
	inter := sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "test intermediate"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	}, root, rootKey, interKey)
	return &testCA{root: root, inter: inter, interKey: interKey}
}

// leaf is what a test asks for.
type leaf struct {
	name  string
	usage []x509.ExtKeyUsage
	dns   []string
	ips   []string
	uris  []string
	life  time.Duration
}

// issue signs l, with the intermediate in its chain.
func (ca *testCA) issue(t *testing.T, l leaf) *tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		Subject: pkix.Name{CommonName: l.name}, ExtKeyUsage: l.usage, DNSNames: l.dns,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	for _, ip := range l.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	for _, u := range l.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	if l.life != 0 {
		tmpl.NotAfter = time.Now().Add(l.life)
	}
	c := sign(t, tmpl, ca.inter, ca.interKey, key)
	return &tls.Certificate{Certificate: [][]byte{c.Raw, ca.inter.Raw}, PrivateKey: key, Leaf: c}
}

func (ca *testCA) roots() []*x509.Certificate { return []*x509.Certificate{ca.root} }

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t *testing.T, tmpl, parent *x509.Certificate, parentKey, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(serials.Add(1))
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Profiles of wakegate's CA.
var (
	clientAuth  = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	serverAuth  = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	gatewayAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
)
