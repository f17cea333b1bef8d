package certs

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/smallstep/certificates/api"
	"github.com/smallstep/certificates/authority/provisioner"
	stepca "github.com/smallstep/certificates/ca"
	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"
)

// Signer signs a certificate request authorized by a one-time token: the
// embedded Authority in-process, or a running gateway's CA API.
type Signer interface {
	Sign(ctx context.Context, csr *x509.CertificateRequest, token string, ttl time.Duration) ([]*x509.Certificate, error)
}

// issue makes a key, a token from the right provisioner and a request, and
// has s sign it. A client may not take a name of wakegate's own
// (ErrReservedName); the gateway's server certificate (identity.GatewayName)
// carries the gateway role, which is what engines admit it by.
func issue(ctx context.Context, s Signer, ca *CA, kind Kind, name string, sans []string, ttl time.Duration) (*Leaf, error) {
	sans, err := leafSANs(kind, name, sans)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	prov := ca.Clients
	if kind == Server {
		prov = ca.Servers
	}
	tok, err := prov.Token(name, sans, time.Minute)
	if err != nil {
		return nil, err
	}
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: generate key: %w", name, err)
	}
	csr, err := x509util.CreateCertificateRequest(name, sans, key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", name, err)
	}
	chain, err := s.Sign(ctx, csr, tok, ttl)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", name, err)
	}
	return &Leaf{Cert: chain[0], Chain: chain, Key: key}, nil
}

// runFile is where a gateway serving the CA's API says so: the embedded
// database is single-process, so operator commands go through the API
// while the gateway holds it.
func runFile(dir string) string { return filepath.Join(dir, "db", "serving.json") }

type serving struct {
	URL string `json:"url"`
	PID int    `json:"pid"`
}

// AnnounceServing records that this process serves the CA's API at url, and
// returns a function that removes the record.
func (ca *CA) AnnounceServing(url string) (remove func(), err error) {
	data, _ := json.Marshal(serving{URL: url, PID: os.Getpid()})
	if err := writeFile(runFile(ca.Dir), data, 0o600); err != nil {
		return nil, err
	}
	return func() { os.Remove(runFile(ca.Dir)) }, nil
}

// servingURL returns the API URL of a live gateway serving this CA, or "".
func (ca *CA) servingURL() string {
	data, err := os.ReadFile(runFile(ca.Dir))
	if err != nil {
		return ""
	}
	var s serving
	if json.Unmarshal(data, &s) != nil || s.URL == "" || s.PID <= 0 {
		return ""
	}
	if err := syscall.Kill(s.PID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return "" // a stale record of a gateway that died
	}
	return s.URL
}

// Operator is what operator commands use to reach the CA.
type Operator struct {
	ca     *CA
	signer Signer
	auth   *Authority   // when the database is opened in-process
	remote *remoteAdmin // when a running gateway's API is used
	URL    string       // the running gateway's CA API, or ""
}

// Operator opens the CA for an operator command: in-process when no gateway
// is serving it, or through the running gateway's API, authenticated by
// the provisioner keys that only holders of the CA directory (and its
// password) have.
//
// With a shared database (ca.DB) it is always opened in-process: every
// gateway on it sees what the command does, a kill included.
func (ca *CA) Operator() (*Operator, error) {
	if url := ca.servingURL(); url != "" && ca.DB == "" {
		client, err := stepca.NewClient(url, stepca.WithRootFile(filepath.Join(ca.Dir, rootCertFile)))
		if err != nil {
			return nil, fmt.Errorf("reach the running gateway's CA at %s: %w", url, err)
		}
		return &Operator{ca: ca, signer: remoteSigner{client}, remote: newRemoteAdmin(url, ca), URL: url}, nil
	}
	a, err := ca.OpenAuthority(AuthorityConfig{})
	if err != nil {
		return nil, err
	}
	return &Operator{ca: ca, signer: a, auth: a}, nil
}

// Close releases the database when it was opened in-process.
func (o *Operator) Close() error {
	if o.auth != nil {
		return o.auth.Close()
	}
	return nil
}

// Issue issues a certificate, recorded in the CA's database.
func (o *Operator) Issue(ctx context.Context, kind Kind, name string, sans []string, ttl time.Duration) (*Leaf, error) {
	return issue(ctx, o.signer, o.ca, kind, name, sans, ttl)
}

// Revocation is what revoking a certificate did.
type Revocation struct {
	Serial   string // decimal, as the CA's database keys it
	Identity string // the certificate's common name
	// Gateway is the CA API of the running gateway that revoked it, or ""
	// when the database was opened in-process (no gateway was serving the
	// CA, so none held connections).
	Gateway string
	// Closed counts the open connections the gateway closed, when asked
	// to (kill); -1 when it did not say how many.
	Closed int
	// Shared is set when the database is shared by several gateways: each
	// refuses the certificate at its next handshake and, when asked to
	// (kill), closes its connections within a few seconds.
	Shared bool
}

// Revoke revokes the certificate with serial, in any form ParseSerial
// reads. A serial the CA's database does not hold is refused
// (ErrUnknownSerial). kill asks a running gateway to close the
// certificate's open connections too (without one, none are open).
func (o *Operator) Revoke(ctx context.Context, serial, reason string, kill bool) (*Revocation, error) {
	serial, err := ParseSerial(serial)
	if err != nil {
		return nil, err
	}
	if o.remote != nil {
		return o.remote.revocation(ctx, serial, reason, kill)
	}
	cert, err := o.auth.revoke(ctx, serial, reason)
	if err != nil {
		return nil, err
	}
	rev := &Revocation{Serial: serial, Identity: cert.Subject.CommonName, Shared: o.auth.Shared()}
	if kill {
		if err := o.auth.recordKill(serial); err != nil {
			return rev, err
		}
	}
	return rev, nil
}

// Records lists the certificates the CA issued.
func (o *Operator) Records(ctx context.Context) ([]Record, error) {
	if o.remote != nil {
		return o.remote.records(ctx)
	}
	return o.auth.Records()
}

type remoteSigner struct{ c *stepca.Client }

func (r remoteSigner) Sign(ctx context.Context, csr *x509.CertificateRequest, token string, ttl time.Duration) ([]*x509.Certificate, error) {
	req := &api.SignRequest{CsrPEM: api.CertificateRequest{CertificateRequest: csr}, OTT: token}
	if ttl > 0 {
		req.NotAfter = provisioner.NewTimeDuration(time.Now().Add(ttl))
	}
	resp, err := r.c.SignWithContext(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("sign through the CA API: %w", err)
	}
	return chainOf(resp), nil
}

// chainOf extracts leaf and intermediates from a sign or renew response.
func chainOf(resp *api.SignResponse) []*x509.Certificate {
	var chain []*x509.Certificate
	for _, c := range resp.CertChainPEM {
		chain = append(chain, c.Certificate)
	}
	if len(chain) == 0 {
		chain = []*x509.Certificate{resp.ServerPEM.Certificate, resp.CaPEM.Certificate}
	}
	return chain
}
