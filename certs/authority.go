package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/smallstep/certificates/api"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/certificates/db"

	"github.com/wakegate/wakegate/identity"
)

// Templates the provisioners apply. Each role gets only its own usage:
//
//   - a client certificate only authenticates clients, and may not take a
//     name of wakegate's own (wakegate-…) or a role mark (wakegate://role/…),
//     whatever signed its token;
//   - a server certificate only serves (engines, the CA API), except the
//     gateway's, marked wakegate://role/gateway, which also dials engines
//     as a client. Only this provisioner issues that mark, and only to the
//     gateway's name; engines admit the gateway by it.
const (
	clientLeafTemplate = `
{{- if hasPrefix "` + identity.ReservedPrefix + `" .Subject.CommonName }}{{ fail "` + reservedNameMsg + `" }}{{ end }}
{{- range .SANs }}
{{- if or (hasPrefix "` + identity.ReservedPrefix + `" .Value) (hasPrefix "` + identity.RoleURIPrefix + `" .Value) }}{{ fail "` + reservedNameMsg + `" }}{{ end }}
{{- end }}
{
	"subject": {{ toJson .Subject }},
	"sans": {{ toJson .SANs }},
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["clientAuth"]
}`
	serverLeafTemplate = `
{{- $gateway := false }}
{{- range .SANs }}
{{- if eq .Value "` + gatewayRoleURI + `" }}{{ $gateway = true }}
{{- else if hasPrefix "` + identity.RoleURIPrefix + `" .Value }}{{ fail "unknown wakegate role" }}{{ end }}
{{- end }}
{{- if and $gateway (ne .Subject.CommonName "` + identity.GatewayName + `") }}{{ fail "the gateway role is for ` + identity.GatewayName + ` only" }}{{ end -}}
{
	"subject": {{ toJson .Subject }},
	"sans": {{ toJson .SANs }},
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": {{ if $gateway }}["serverAuth", "clientAuth"]{{ else }}["serverAuth"]{{ end }}
}`
)

// gatewayRoleURI marks the gateway's certificate: identity.RoleURI of
// identity.RoleGateway, spelled as a constant for the template.
const gatewayRoleURI = identity.RoleURIPrefix + identity.RoleGateway

// MinTTL is the shortest certificate lifetime the authority signs. It is
// far below what production wants; tests rotate certificates every few
// seconds.
const MinTTL = 5 * time.Second

// AuthorityConfig says how the embedded authority is reached.
type AuthorityConfig struct {
	// Address is the host:port its API is served on.
	Address string
	// DNSNames name the CA in its server certificate (at least one).
	DNSNames []string
	// MaxClientTTL caps client certificate lifetimes (MaxClientTTL by default).
	MaxClientTTL time.Duration
	// DefaultClientTTL applies when a request names no lifetime.
	DefaultClientTTL time.Duration
	// RevocationStaleness bounds how long handshakes are judged by the
	// last revocation list read while a shared database does not answer
	// (DefaultRevocationStaleness when zero).
	RevocationStaleness time.Duration
	// Log receives what the authority says of a shared database.
	Log *slog.Logger
}

// Authority is the embedded smallstep certificate authority on the CA
// directory, with its persistent database (bbolt, in CA/db): issuance,
// renewal, revocation and used tokens all survive restarts.
type Authority struct {
	ca     *CA
	auth   *authority.Authority
	onKill atomic.Pointer[func(serial string) int] // set by OnKill, possibly while serving
	oidc   atomic.Pointer[oidcVerifier]            // set by EnableOIDC

	revoked *revokedIndex // the public revocation list

	// On a shared database (CA.DB): nil with bbolt.
	shared    *sharedDB
	staleness time.Duration
	kills     killsSeen
	log       *slog.Logger

	background     sync.WaitGroup       // goroutines Close waits for
	stopBackground []context.CancelFunc // ends them; appended before Close only
}

func dbPath(dir string) string { return filepath.Join(dir, "db", "ca.db") }

// OpenAuthority starts the embedded authority. The embedded database is
// single-process: while one process holds it, another's open waits, then
// fails. A shared one (ca.DB) is not.
func (ca *CA) OpenAuthority(cfg AuthorityConfig) (*Authority, error) {
	if cfg.MaxClientTTL == 0 {
		cfg.MaxClientTTL = MaxClientTTL
	}
	if cfg.DefaultClientTTL == 0 {
		cfg.DefaultClientTTL = min(DefaultClientTTL, cfg.MaxClientTTL)
	}
	if len(cfg.DNSNames) == 0 {
		cfg.DNSNames = []string{"localhost"}
	}
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	if cfg.RevocationStaleness <= 0 {
		cfg.RevocationStaleness = DefaultRevocationStaleness
	}
	if cfg.Log == nil {
		cfg.Log = discardLog
	}
	dur := func(d time.Duration) *provisioner.Duration { return &provisioner.Duration{Duration: d} }
	jwk := func(p *Provisioner, tmpl string, def, max time.Duration) *provisioner.JWK {
		return &provisioner.JWK{
			Type: "JWK",
			Name: p.Name,
			Key:  p.Public(),
			Claims: &provisioner.Claims{
				MinTLSDur:     dur(MinTTL),
				MaxTLSDur:     dur(max),
				DefaultTLSDur: dur(def),
			},
			Options: &provisioner.Options{X509: &provisioner.X509Options{Template: tmpl}},
		}
	}
	c := &config.Config{
		Root:             []string{filepath.Join(ca.Dir, rootCertFile)},
		IntermediateCert: filepath.Join(ca.Dir, intermediateCertFile),
		IntermediateKey:  filepath.Join(ca.Dir, intermediateKeyFile),
		Address:          cfg.Address,
		DNSNames:         cfg.DNSNames,
		DB:               &db.Config{Type: "bbolt", DataSource: dbPath(ca.Dir)},
		AuthorityConfig: &config.AuthConfig{
			// smallstep refuses, by default, tokens issued before the
			// authority started: a stopgap for a CA that forgets spent
			// tokens. This one keeps them in its database, so a token
			// minted for a CI job stays good across a gateway's restart
			// (a rolling deploy, several gateways) until its own expiry.
			DisableIssuedAtCheck: true,
			Provisioners: provisioner.List{
				jwk(ca.Clients, clientLeafTemplate, cfg.DefaultClientTTL, cfg.MaxClientTTL),
				jwk(ca.Servers, serverLeafTemplate, ServerTTL, ServerTTL),
			},
		},
	}
	opts := []authority.Option{authority.WithQuietInit()}
	if ca.password != nil {
		opts = append(opts, authority.WithPassword(ca.password))
	}
	var shared *sharedDB
	if ca.DB != "" {
		sdb, s, err := openSharedDB(ca.DB)
		if err != nil {
			return nil, err
		}
		shared = s
		c.DB = &db.Config{Type: "postgresql", DataSource: ca.DB}
		opts = append(opts, authority.WithDatabase(sdb))
	}
	auth, err := authority.New(c, opts...)
	if err != nil {
		if shared != nil {
			shared.Close()
		}
		return nil, fmt.Errorf("open CA authority in %s: %w", ca.Dir, err)
	}
	a := &Authority{ca: ca, auth: auth, revoked: newRevokedIndex(), shared: shared,
		staleness: cfg.RevocationStaleness, kills: killsSeen{seen: map[string]bool{}}, log: cfg.Log}
	if shared != nil {
		if err := a.startSync(); err != nil {
			a.Close()
			return nil, err
		}
	}
	return a, nil
}

// Shared says whether the authority's database is shared by several
// gateways (PostgreSQL) rather than the CA directory's own.
func (a *Authority) Shared() bool { return a.shared != nil }

// Close stops the authority's background work and closes its database.
func (a *Authority) Close() error {
	for _, stop := range a.stopBackground {
		stop()
	}
	a.background.Wait()
	return a.auth.Shutdown()
}

// CA is the CA the authority serves.
func (a *Authority) CA() *CA { return a.ca }

// Sign signs csr as the one-time token authorizes, exactly as the API's
// /sign does: the token is spent and the certificate recorded.
func (a *Authority) Sign(ctx context.Context, csr *x509.CertificateRequest, token string, ttl time.Duration) ([]*x509.Certificate, error) {
	ctx = provisioner.NewContextWithMethod(ctx, provisioner.SignMethod)
	extra, err := a.auth.Authorize(ctx, token)
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	var so provisioner.SignOptions
	if ttl > 0 {
		so.NotAfter = provisioner.NewTimeDuration(time.Now().Add(ttl))
	}
	chain, err := a.auth.SignWithContext(ctx, csr, so, extra...)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return chain, nil
}

// Issue creates a key and has the authority sign a certificate for it: a
// client certificate for identity name, or a server certificate for name
// with sans. It goes through a one-time token like any other issuance, so
// it is recorded in the database.
func (a *Authority) Issue(ctx context.Context, kind Kind, name string, sans []string, ttl time.Duration) (*Leaf, error) {
	return issue(ctx, a, a.ca, kind, name, sans, ttl)
}

// Renew renews cert with the same key and lifetime, as /renew does.
func (a *Authority) Renew(ctx context.Context, cert *x509.Certificate) ([]*x509.Certificate, error) {
	chain, err := a.auth.RenewContext(ctx, cert, nil)
	if err != nil {
		return nil, fmt.Errorf("renew certificate %s: %w", cert.SerialNumber, err)
	}
	return chain, nil
}

// IsRevoked reports whether the certificate with serial (decimal, as
// smallstep stores it) has been revoked.
//
// On a shared database the database answers; while it does not, the last
// revocation list read answers for the staleness bound, then nothing does
// (an error: handshakes are refused).
func (a *Authority) IsRevoked(serial string) (bool, error) {
	if a.shared != nil {
		return a.isRevokedShared(serial, true)
	}
	return a.auth.IsRevoked(serial)
}

// IsEngineRevoked is IsRevoked for the certificates of the gateway's own
// engines, which it checks at every dial: while a shared database does not
// answer, the last revocation list read decides however old it is. Past the
// staleness bound the gateway lets no new client in anyway; refusing its
// engines too would only break the connections it already carries (a
// failed dial takes the engine for dead and restarts it).
func (a *Authority) IsEngineRevoked(serial string) (bool, error) {
	if a.shared != nil {
		return a.isRevokedShared(serial, false)
	}
	return a.auth.IsRevoked(serial)
}

// Handler serves smallstep's CA API (/1.0/sign, /1.0/renew, /1.0/revoke,
// /roots, /provisioners, …) at / and /1.0, as step-ca does, so smallstep's
// own clients work against it unchanged.
func (a *Authority) Handler() http.Handler {
	mux := chi.NewRouter()
	api.Route(mux)
	mux.Route("/1.0", func(r chi.Router) { api.Route(r) })
	return a.adminRoutes(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(authority.NewContext(r.Context(), a.auth)))
	}))
}

// ServerTLS is the TLS config of the CA's API: its certificate comes from
// cert; a client certificate is verified when given (renewal authenticates
// with the current certificate) but not required (bootstrap has none yet).
//
// Any certificate of this CA may renew itself here, whatever its usage: an
// engine's certificate only serves (no client usage, so that the gateway's
// port never takes it for a client) and still renews over mTLS. crypto/tls
// would demand client usage of a client certificate, so the chain is
// checked here instead, for any usage, at every handshake (resumed ones
// too). smallstep's handlers then act on that certificate alone (renew,
// rekey, revoke itself).
func (a *Authority) ServerTLS(cert func() *tls.Certificate) *tls.Config {
	roots := a.ca.Pool()
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequestClientCert,
		ClientCAs:  roots, // only named to clients, as the issuers wanted
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			})
			if err != nil {
				return fmt.Errorf("client certificate: %w", err)
			}
			return nil
		},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cert(), nil
		},
	}
}

// splitHost returns the host of a host:port, or s itself.
func splitHost(s string) string {
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}
