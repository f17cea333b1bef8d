package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/envoy"
	"github.com/wakegate/wakegate/identity"
)

// envoyCredsHelp says where an Envoy's certificate comes from, for the
// help of the subcommands that obtain one.
const envoyCredsHelp = `
Credentials, as 'wakegate connect' takes them (role client):
  --oidc github   in a GitHub Actions job with 'permissions: id-token: write':
                  the job's OIDC token, exchanged at --ca-url; renewal asks
                  GitHub for a fresh token and enrols again.
  --token T       a single-use token ('wakegate certs token'; also
                  $WAKEGATE_TOKEN or --token-file) exchanged at --ca-url.
  --creds DIR     client.crt, client.key and ca.crt ('wakegate certs issue'),
                  renewed at --ca-url if given.
Role engine: a single-use token of the CA's servers provisioner for an
engine name (wakegate-engine-N), as the gateway hands its engines in
$WAKEGATE_TOKEN, with --ca-url and --ca-fingerprint (default
$WAKEGATE_CA_URL, $WAKEGATE_CA_FINGERPRINT); or --creds DIR holding
engine.crt, engine.key and ca.crt.
The CA is trusted by its root's fingerprint (--ca-fingerprint). With
--ca-url the certificate is renewed at two thirds of its life.`

// envoyCredFlags are the options of 'envoy creds' and 'envoy xds' that
// obtain an Envoy's certificate: connect's credentials, with a bound on
// enrolling.
type envoyCredFlags struct {
	cred        credFlags
	waitTimeout time.Duration
	logLevel    string
}

// addEnvoyCredFlags registers the credential flags of connect on fs.
func addEnvoyCredFlags(fs *flag.FlagSet, f *envoyCredFlags) {
	fs.StringVar(&f.cred.oidc, "oidc", "", `role client: enrol with the CI job's OIDC token: "github" (GitHub Actions)`)
	fs.StringVar(&f.cred.oidcAudience, "oidc-audience", certs.DefaultOIDCAudience, "audience of the OIDC token (the gateway's --oidc-audience)")
	fs.StringVar(&f.cred.creds, "creds", "", "credentials directory to read (role client: from 'wakegate certs issue --out')")
	fs.StringVar(&f.cred.caURL, "ca-url", "", "the gateway's CA API, https://HOST:PORT, to enrol and to renew")
	fs.StringVar(&f.cred.caFP, "ca-fingerprint", "", "SHA-256 fingerprint of the CA root ('wakegate certs fingerprint'), with --oidc or a token")
	fs.StringVar(&f.cred.token, "token", "", "single-use enrolment token (prefer $WAKEGATE_TOKEN or --token-file: arguments are visible to other users)")
	fs.StringVar(&f.cred.tokenFile, "token-file", "", "file holding the single-use enrolment token")
	fs.DurationVar(&f.cred.certTTL, "cert-ttl", 0, "lifetime to ask for when enrolling (default: the CA's); renewal comes at two thirds of it")
	fs.DurationVar(&f.waitTimeout, "wait-timeout", 10*time.Minute, "give up enrolling after this long")
}

// validateEnvoyCreds checks the credential flags for role before anything
// is opened or spent.
func validateEnvoyCreds(cmd string, role envoy.Role, f *envoyCredFlags) error {
	if role == envoy.Engine && f.cred.caURL == "" {
		f.cred.caURL = os.Getenv("WAKEGATE_CA_URL")
	}
	if role == envoy.Engine && f.cred.caFP == "" {
		f.cred.caFP = os.Getenv("WAKEGATE_CA_FINGERPRINT")
	}
	token := f.cred.token != "" || f.cred.tokenFile != ""
	sources := 0
	for _, set := range []bool{f.cred.oidc != "", f.cred.creds != "", token} {
		if set {
			sources++
		}
	}
	if sources == 0 && os.Getenv("WAKEGATE_TOKEN") != "" {
		token, sources = true, 1
	}
	switch {
	case sources == 0:
		return usageError(cmd, "credentials are required: --oidc github (role client, in GitHub Actions), a token (--token, --token-file or $WAKEGATE_TOKEN) with --ca-url and --ca-fingerprint, or --creds DIR")
	case sources > 1:
		return usageError(cmd, "use one of --oidc, --token (or --token-file) and --creds")
	case f.cred.oidc != "" && role != envoy.Client:
		return usageError(cmd, "--oidc enrols CI jobs: it is for the client role; an engine enrols with the token the gateway gives it")
	case f.cred.oidc != "" && f.cred.oidc != "github":
		return usageError(cmd, "--oidc %q is not supported; use --oidc github", f.cred.oidc)
	case (f.cred.oidc != "" || token) && (f.cred.caURL == "" || f.cred.caFP == ""):
		return usageError(cmd, "enrolling needs --ca-url and --ca-fingerprint (the gateway's CA API, and what 'wakegate certs fingerprint' prints)")
	case f.waitTimeout <= 0:
		return usageError(cmd, "--wait-timeout must be positive")
	case f.cred.certTTL < 0:
		return usageError(cmd, "--cert-ttl must not be negative")
	}
	if token {
		// Read and checked now: a bad one fails before anything opens.
		if err := f.cred.resolveToken(); err != nil {
			return err
		}
	}
	if f.cred.creds != "" {
		dir, err := filepath.Abs(f.cred.creds)
		if err != nil {
			return err
		}
		f.cred.creds = dir
		if err := checkEnvoyCreds(role, dir); err != nil {
			return usageError(cmd, "--creds: %v", err)
		}
	}
	return nil
}

// envoyIdentity obtains the certificate an Envoy of role presents, the
// renewer that keeps it fresh, and the roots it trusts.
func envoyIdentity(ctx context.Context, role envoy.Role, f *envoyCredFlags, progress io.Writer, log *slog.Logger) (*certs.Renewer, []*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, f.waitTimeout)
	defer cancel()
	if role == envoy.Client {
		return clientCredentials(ctx, &f.cred, progress, log)
	}
	if f.cred.creds != "" {
		cert, roots, err := loadEngineCreds(f.cred.creds)
		if err != nil {
			return nil, nil, err
		}
		renew, err := dirRenewer(f.cred.caURL, roots)
		if err != nil {
			return nil, nil, err
		}
		r, err := certs.NewRenewer(cert.Leaf.Subject.CommonName, cert, renew, log)
		return r, roots, err
	}
	e, err := enrolRetrying(ctx, progress, func() (*certs.Enrollment, error) {
		return certs.Enroll(ctx, f.cred.caURL, f.cred.caFP, f.cred.tok, f.cred.certTTL)
	})
	if err != nil {
		return nil, nil, err
	}
	if err := requireEngineCert(e.Cert.Leaf); err != nil {
		return nil, nil, fmt.Errorf("the token: %w", err)
	}
	logEnrolled(log, e)
	r, err := certs.NewRenewer(e.Cert.Leaf.Subject.CommonName, e.Cert, e.Renew, log)
	return r, []*x509.Certificate{e.Root}, err
}

// loadEngineCreds reads an engine role's credentials directory.
func loadEngineCreds(dir string) (*tls.Certificate, []*x509.Certificate, error) {
	f := envoy.FilesFor(envoy.Engine)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, f.Cert), filepath.Join(dir, f.Key))
	if err != nil {
		return nil, nil, fmt.Errorf("load engine credentials from %s: %w (write them with 'wakegate envoy creds --role engine --out %s')", dir, err, dir)
	}
	if err := requireEngineCert(cert.Leaf); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, f.Cert), err)
	}
	if time.Now().After(cert.Leaf.NotAfter) {
		return nil, nil, fmt.Errorf("load engine credentials from %s: the certificate expired at %s", dir, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	roots, err := certs.LoadRoots(dir)
	if err != nil {
		return nil, nil, err
	}
	return &cert, roots, nil
}

// requireEngineCert refuses a certificate the gateway would not take from
// an engine: it checks the engine's name and server usage.
func requireEngineCert(leaf *x509.Certificate) error {
	if !strings.HasPrefix(leaf.Subject.CommonName, identity.EngineNamePrefix) {
		return fmt.Errorf("the certificate is for %q; the engine role needs an engine's (%sN, from the servers provisioner's token the gateway gives its engines): the gateway refuses any other", leaf.Subject.CommonName, identity.EngineNamePrefix)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return fmt.Errorf("the certificate for %q is not for server use: the gateway refuses it", leaf.Subject.CommonName)
	}
	return nil
}
