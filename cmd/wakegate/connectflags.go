package main

import (
	"flag"
	"os"
	"strings"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/connect"
)

// connectFlags are connect's options, grouped by what they configure.
type connectFlags struct {
	gateway  connectGatewayFlags // the gateway reached over mTLS
	cred     credFlags           // where the client certificate comes from
	local    connectLocalFlags   // the sidecar's own listener
	mode     connectModeFlags    // wait, run a command, or serve in the background
	logLevel string
	// logFormat is text or json.
	logFormat string
}

type connectGatewayFlags struct {
	raw        gatewayValues // --gateway as given, each repeat
	addrs      []string      // every address, parsed by validate
	serverName string
	ahead      int // --ahead: connections kept open ahead of need
}

// gatewayValues collects --gateway, which may be repeated and may hold
// several addresses joined by commas (connect.ParseGateways reads them).
type gatewayValues []string

func (g *gatewayValues) String() string { return strings.Join(*g, ",") }
func (g *gatewayValues) Set(v string) error {
	*g = append(*g, v)
	return nil
}

// credFlags say where a client certificate comes from: an OIDC enrolment,
// a single-use token, or a credentials directory. connect and 'envoy
// creds|xds' share them.
type credFlags struct {
	oidc, oidcAudience string
	creds              string
	caURL, caFP        string
	token, tokenFile   string
	certTTL            time.Duration

	// tok is the token itself, read by resolveToken from --token-file,
	// --token or $WAKEGATE_TOKEN.
	tok string
}

type connectLocalFlags struct {
	listen       string
	set          bool                  // --listen was given
	unsafeListen bool                  // --unsafe-listen
	addr         connect.ListenAddress // --listen, parsed by validate
}

type connectModeFlags struct {
	wait, background bool
	pidFile, logFile string
	waitTimeout      time.Duration
}

func (f *connectFlags) define(fs *flag.FlagSet) {
	fs.Var(&f.gateway.raw, "gateway", "gateway address HOST:PORT (required); several, joined by commas or with --gateway again, are tried in turn from the last that worked")
	fs.StringVar(&f.gateway.serverName, "server-name", "", "name to verify in the gateway's certificate (default: each --gateway address's host)")
	fs.IntVar(&f.gateway.ahead, "ahead", 2, "connections to the gateway kept open ahead of need, so a new connection skips the TLS handshake; unused, they wake no engine (0: open each on demand)")

	fs.StringVar(&f.cred.oidc, "oidc", "", `enrol with the CI job's OIDC token: "github" (GitHub Actions)`)
	fs.StringVar(&f.cred.oidcAudience, "oidc-audience", certs.DefaultOIDCAudience, "audience of the OIDC token (the gateway's --oidc-audience)")
	fs.StringVar(&f.cred.creds, "creds", "", "credentials directory from 'wakegate certs issue --out'")
	fs.StringVar(&f.cred.caURL, "ca-url", "", "the gateway's CA API, https://HOST:PORT, to enrol (--oidc, --token) and to renew")
	fs.StringVar(&f.cred.caFP, "ca-fingerprint", "", "SHA-256 fingerprint of the CA root ('wakegate certs fingerprint'), with --oidc or --token")
	fs.StringVar(&f.cred.token, "token", "", "single-use enrolment token (prefer $WAKEGATE_TOKEN or --token-file: arguments are visible to other users)")
	fs.StringVar(&f.cred.tokenFile, "token-file", "", "file holding the single-use enrolment token")
	fs.DurationVar(&f.cred.certTTL, "cert-ttl", 0, "lifetime to ask for when enrolling (default: the CA's, 1h)")

	fs.StringVar(&f.local.listen, "listen", "127.0.0.1:9080", "loopback HOST:PORT or unix:///PATH for local clients (default with -- CMD or --background: a free loopback port)")
	fs.BoolVar(&f.local.unsafeListen, "unsafe-listen", false, "allow a --listen address other machines can reach: they build as this job")

	fs.BoolVar(&f.mode.wait, "wait", false, "wake the engine, wait until it is ready, then exit")
	fs.BoolVar(&f.mode.background, "background", false, "wake the engine, wait until it is ready, then detach and serve (needs --pid-file)")
	fs.StringVar(&f.mode.pidFile, "pid-file", "", "with --background: file to write the sidecar's process id to")
	fs.StringVar(&f.mode.logFile, "log-file", "", "with --background: the sidecar's log (default: the --pid-file path with .log added)")
	fs.DurationVar(&f.mode.waitTimeout, "wait-timeout", 10*time.Minute, "give up enrolling and waiting for the engine after this long")

	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	logFormatVar(fs, &f.logFormat)
}

// maxAhead bounds --ahead: each spare is a connection the gateway counts
// against the identity's limit (--max-conns-per-identity).
const maxAhead = 16

// validate judges every flag, and reads what they name (the token, the
// credentials directory), before connect opens a listener or spends a
// token: a mistake costs nothing.
func (f *connectFlags) validate(cmdArgs []string) error {
	c := &f.cred
	sources := 0
	for _, set := range []bool{c.oidc != "", c.creds != "", c.token != "" || c.tokenFile != ""} {
		if set {
			sources++
		}
	}
	envToken := sources == 0 && os.Getenv("WAKEGATE_TOKEN") != ""
	tokenSet := c.token != "" || c.tokenFile != "" || envToken
	switch {
	case len(f.gateway.raw) == 0:
		return usageError("connect", "--gateway is required")
	case sources == 0 && !envToken:
		return usageError("connect", "credentials are required: --oidc github (in GitHub Actions), a token (--token, --token-file or $WAKEGATE_TOKEN) with --ca-url and --ca-fingerprint, or --creds DIR")
	case sources > 1:
		return usageError("connect", "use one of --oidc, --token (or --token-file) and --creds")
	case c.oidc != "" && c.oidc != "github":
		return usageError("connect", "--oidc %q is not supported; use --oidc github", c.oidc)
	case c.oidc != "" && (c.caURL == "" || c.caFP == ""):
		return usageError("connect", "--oidc needs --ca-url and --ca-fingerprint (the gateway's CA API, and what 'wakegate certs fingerprint' prints)")
	case c.oidc != "" && c.oidcAudience == "":
		return usageError("connect", "--oidc-audience cannot be empty")
	case tokenSet && (c.caURL == "" || c.caFP == ""):
		return usageError("connect", "a token needs --ca-url and --ca-fingerprint ('wakegate certs fingerprint' prints it)")
	case c.certTTL < 0 || c.certTTL > 0 && c.certTTL < certs.MinTTL:
		// Shorter, the CA would spend the token on a certificate that
		// expires before it is used.
		return usageError("connect", "--cert-ttl must be 0 (the CA's default) or at least %s", certs.MinTTL)
	case f.mode.wait && len(cmdArgs) > 0:
		return usageError("connect", "--wait and a command are exclusive: a command already waits")
	case f.mode.background && (f.mode.wait || len(cmdArgs) > 0):
		return usageError("connect", "--background is exclusive with --wait and a command")
	case f.mode.background && f.mode.pidFile == "":
		return usageError("connect", "--background needs --pid-file FILE (stop the sidecar with: kill $(cat FILE))")
	case !f.mode.background && (f.mode.pidFile != "" || f.mode.logFile != ""):
		return usageError("connect", "--pid-file and --log-file go with --background")
	case f.mode.waitTimeout <= 0:
		return usageError("connect", "--wait-timeout must be positive")
	case f.gateway.ahead < 0 || f.gateway.ahead > maxAhead:
		return usageError("connect", "--ahead must be between 0 and %d", maxAhead)
	}
	gws, err := connect.ParseGateways(f.gateway.raw)
	if err != nil {
		return usageError("connect", "--gateway: %v", err)
	}
	f.gateway.addrs = gws
	addr, err := connect.ParseListenAddress(f.local.listen)
	if err != nil {
		return usageError("connect", "--listen %q: %v", f.local.listen, err)
	}
	if !addr.LocalOnly() && !f.local.unsafeListen {
		return usageError("connect", "--listen %s is reachable from other machines: anyone who reaches it uses this job's identity; listen on 127.0.0.1 or unix:///path, or pass --unsafe-listen", f.local.listen)
	}
	f.local.addr = addr
	if _, err := parseLogLevel(f.logLevel); err != nil {
		return usageError("connect", "%v", err)
	}
	if err := checkLogFormat(f.logFormat); err != nil {
		return usageError("connect", "%v", err)
	}
	if tokenSet {
		return c.resolveToken()
	}
	if c.creds != "" {
		return c.checkCreds()
	}
	return nil
}

// resolveToken reads the token (--token-file, else --token, else
// $WAKEGATE_TOKEN) and checks its form and expiry.
func (c *credFlags) resolveToken() error {
	tok, err := readToken(c.token, c.tokenFile)
	if err != nil {
		return err
	}
	if err := certs.CheckToken(tok); err != nil {
		return err
	}
	c.tok = tok
	return nil
}

// checkCreds reads the credentials directory as clientCredentials will.
func (c *credFlags) checkCreds() error {
	if _, _, err := certs.LoadClientCreds(c.creds); err != nil {
		return err
	}
	_, err := certs.LoadRoots(c.creds)
	return err
}
