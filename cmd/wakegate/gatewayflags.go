package main

import (
	"flag"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/fly"
	"github.com/wakegate/wakegate/gateway"
)

// gatewayFlags are the gateway's options, grouped by what they configure.
type gatewayFlags struct {
	front    frontFlags   // where clients connect, and the admin endpoint
	ca       caFlags      // the embedded authority and its API
	access   accessFlags  // who may connect: the policy and OIDC enrolment
	pool     poolFlags    // how sessions are placed, woken and stopped
	host     hostFlags    // where engines run
	webhook  webhookFlags // GitHub's workflow_job webhook: pre-wakes (gatewaywebhook.go)
	logLevel string
	// logFormat is text or json.
	logFormat string
	// config is the TOML file of flag values (config.go); not a key in it.
	config string
}

// frontFlags are the gateway's own listeners.
type frontFlags struct {
	listen, admin, sans string
	// maxConnsPerIdentity bounds one identity's open connections.
	maxConnsPerIdentity int
	// engineAhead is how many streams to each engine in use are kept
	// open ahead of need (--engine-ahead).
	engineAhead int
}

// maxEngineAhead bounds --engine-ahead: each spare holds a descriptor at
// the gateway, the engine and BuildKit.
const maxEngineAhead = 16

// caFlags are the embedded authority's.
type caFlags struct {
	dir, passwordFile string
	listen, sans      string // the CA API
	// create makes the CA in dir on a first start (--ca-init).
	create bool
	// maxClientTTL and clientTTL bound client certificates; certTTL is
	// the gateway's and its local engines' own.
	maxClientTTL, clientTTL, certTTL time.Duration
	// db is the CA's database when several gateways share it
	// (PostgreSQL); staleness bounds how long handshakes trust the last
	// revocation list read while it does not answer.
	db        string
	staleness time.Duration
}

// accessFlags say who may connect and enrol.
type accessFlags struct {
	policyFile, oidcIssuer, oidcAudience string
}

// poolFlags shape the pool: its size, placement and wake/idle bounds.
type poolFlags struct {
	engines                          int
	softLimit, hardLimit, minRunning int
	prefer                           string
	idle, wakeTimeout                time.Duration
}

// hostFlags choose the engine host and configure each kind.
type hostFlags struct {
	provider string
	// engineCAURL is the CA API as remote engines reach it.
	engineCAURL string
	local       localHostFlags
	fly         flyHostFlags
	exec        execHostFlags
}

type localHostFlags struct {
	state, buildkitd, engineKind, engineBin string
}

type flyHostFlags struct {
	app, pool string
	suspend   bool
	stopWait  time.Duration
	leaseTTL  time.Duration
}

type execHostFlags struct {
	start, stop, status string
}

// define registers every flag of the gateway on fs.
func (f *gatewayFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.front.listen, "listen", "127.0.0.1:8443", "address for client mTLS connections")
	fs.StringVar(&f.front.admin, "admin", "127.0.0.1:8444", `address of the admin HTTP endpoint ("" disables it)`)
	fs.StringVar(&f.front.sans, "san", "", "extra comma-separated DNS names or IPs for the gateway's certificate")
	fs.IntVar(&f.front.maxConnsPerIdentity, "max-conns-per-identity", gateway.DefaultMaxConnsPerIdentity, "most connections one client identity may have open (held, proxied, wake requests and connect's spares together); beyond, connections are refused")
	fs.IntVar(&f.front.engineAhead, "engine-ahead", 2, "streams to each engine kept open ahead of need, so a new stream skips the handshake to the engine: made to an engine while it wakes, and to a running one for a minute after its last stream, never to a stopped one; unused, they keep no engine awake (0: dial each on demand)")

	fs.StringVar(&f.ca.dir, "ca-dir", "", "CA directory made by 'certs init' (required)")
	fs.BoolVar(&f.ca.create, "ca-init", false, "create the CA in --ca-dir if it has none, as 'certs init' does (keys encrypted with the CA password), and log its root fingerprint: a first start on a fresh volume (docs/fly.md). Not with --ca-db")
	fs.StringVar(&f.ca.passwordFile, "password-file", "", "file holding the CA password (default: $WAKEGATE_CA_PASSWORD)")
	fs.StringVar(&f.ca.listen, "ca-listen", "127.0.0.1:9443", `address of the CA's HTTPS API ("" serves none)`)
	fs.StringVar(&f.ca.sans, "ca-san", "", "extra comma-separated DNS names or IPs for the CA API's certificate")
	fs.DurationVar(&f.ca.maxClientTTL, "max-client-ttl", certs.MaxClientTTL, "longest client certificate the CA signs")
	fs.DurationVar(&f.ca.clientTTL, "client-ttl", certs.DefaultClientTTL, "lifetime of client certificates that ask for none")
	fs.DurationVar(&f.ca.certTTL, "cert-ttl", certs.ServerTTL, "lifetime of the gateway's and its local engines' certificates (renewed at two thirds)")
	fs.StringVar(&f.ca.db, "ca-db", "", "the CA's database when several gateways share it: postgresql://USER@HOST:PORT/DB (password in PGPASSWORD or ~/.pgpass; docs/ha.md). Unset: bbolt in --ca-dir, one gateway")
	fs.DurationVar(&f.ca.staleness, "revocation-staleness", certs.DefaultRevocationStaleness, "with --ca-db: how long handshakes are judged by the last revocation list read while the database does not answer; past it they are refused")

	fs.StringVar(&f.access.policyFile, "policy", "", "TOML file of who may connect (see 'wakegate help policy'); without it OIDC enrolment is off and every certificate of the CA is let in")
	fs.StringVar(&f.access.oidcIssuer, "oidc-issuer", certs.DefaultOIDCIssuer, "OIDC issuer whose CI job tokens the CA exchanges for client certificates (GitHub Enterprise Server: https://HOST/_services/token)")
	fs.StringVar(&f.access.oidcAudience, "oidc-audience", certs.DefaultOIDCAudience, "audience OIDC tokens must name (connect --oidc-audience)")

	fs.IntVar(&f.pool.engines, "engines", 1, "number of engines in the pool (local and exec)")
	softLimitVar(fs, &f.pool.softLimit)
	fs.IntVar(&f.pool.hardLimit, "hard-limit", gateway.DefaultPolicy.Hard, "most sessions an engine ever takes; beyond, connections are held")
	fs.StringVar(&f.pool.prefer, "prefer", "home", `"home": wake a client's home engine (its cache) when it is free; "warm": any running engine first`)
	fs.IntVar(&f.pool.minRunning, "min-running", 0, "engines kept running when idle")
	fs.DurationVar(&f.pool.idle, "idle", 30*time.Second, "stop an engine this long after its last connection closes")
	fs.DurationVar(&f.pool.wakeTimeout, "wake-timeout", 60*time.Second, "give up on a wake (start and BuildKit answering) after this long")

	fs.StringVar(&f.host.provider, "provider", "local", `engine host: "local", "fly" or "exec"`)
	fs.StringVar(&f.host.engineCAURL, "engine-ca-url", "", "the CA API's URL as remote engines reach it (default: the --ca-listen URL)")
	fs.StringVar(&f.host.local.state, "state", "", "directory for the engines' persistent state (required for local)")
	fs.StringVar(&f.host.local.buildkitd, "buildkitd", "", "buildkitd binary (default: $WAKEGATE_BUILDKITD, then beside wakegate, then $PATH)")
	fs.StringVar(&f.host.local.engineKind, "engine", "buildkit", "provider local: engine kind, buildkit or dagger (each Dagger engine in its own namespaces; see docs/dagger.md)")
	fs.StringVar(&f.host.local.engineBin, "engine-bin", "", "provider local, --engine dagger: directory holding dagger-engine, dagger-init and dnsname (default: $WAKEGATE_DAGGER_BIN)")
	fs.StringVar(&f.host.fly.app, "fly-app", "", "Fly app holding the engine machines (provider fly; token from $FLY_API_TOKEN)")
	fs.StringVar(&f.host.fly.pool, "fly-pool", "engines", "engine pool within the Fly app (machine metadata "+fly.PoolKey+")")
	fs.BoolVar(&f.host.fly.suspend, "fly-suspend", false, "suspend idle Fly machines instead of stopping them (faster wakes; see docs/fly.md)")
	fs.DurationVar(&f.host.fly.leaseTTL, "fly-lease-ttl", 30*time.Second, "provider fly: life of a machine lease this gateway takes to start or stop it; a gateway that dies holding one holds up the others that long")
	fs.DurationVar(&f.host.fly.stopWait, "fly-stop-wait", 30*time.Second, "provider fly: how long one stop is waited for; an engine still draining then stays billed as stopping and is asked again (at most 50s)")
	fs.StringVar(&f.host.exec.start, "exec-start", "", "provider exec: shell command that starts engine $WAKEGATE_ENGINE and prints its host:port")
	fs.StringVar(&f.host.exec.stop, "exec-stop", "", "provider exec: shell command that stops engine $WAKEGATE_ENGINE")
	fs.StringVar(&f.host.exec.status, "exec-status", "", "provider exec: optional shell command that prints running or stopped")

	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	logFormatVar(fs, &f.logFormat)
	f.webhook.define(fs)
	fs.StringVar(&f.config, configFlagName, "", "TOML file of these flags' values, keyed by flag name; WAKEGATE_* variables and flags override it (default: $WAKEGATE_CONFIG; see 'wakegate help config')")
}

// validate judges every flag before anything is opened or started.
func (f *gatewayFlags) validate() error {
	if f.ca.dir == "" {
		return usageError("gateway", "--ca-dir is required")
	}
	for _, check := range []func() error{f.host.validate, f.access.validate, f.ca.validate, f.pool.validate, f.front.validate,
		func() error { return f.webhook.validate(f.access.policyFile) }} {
		if err := check(); err != nil {
			return err
		}
	}
	if _, err := parseLogLevel(f.logLevel); err != nil {
		return usageError("gateway", "%v", err)
	}
	if err := checkLogFormat(f.logFormat); err != nil {
		return usageError("gateway", "%v", err)
	}
	return nil
}

func (h *hostFlags) validate() error {
	switch {
	case h.provider != "local" && h.provider != "fly" && h.provider != "exec":
		return usageError("gateway", "--provider %q is not supported; use local, fly or exec", h.provider)
	case h.provider == "exec" && (h.exec.start == "" || h.exec.stop == ""):
		return usageError("gateway", "the exec provider needs --exec-start and --exec-stop")
	case h.provider == "local" && h.local.state == "":
		return usageError("gateway", "--state is required for the local provider")
	case h.local.engineKind != string(engine.KindBuildkit) && h.local.engineKind != string(engine.KindDagger):
		return usageError("gateway", "--engine must be buildkit or dagger")
	case h.local.engineKind == string(engine.KindDagger) && h.provider != "local":
		return usageError("gateway", "--engine dagger is for the local provider; a %s engine machine is given --engine dagger by its own command", h.provider)
	case h.fly.stopWait <= 0 || h.fly.stopWait > 50*time.Second:
		// One stop round of the gateway is bounded by a minute.
		return usageError("gateway", "--fly-stop-wait must be between 0 and 50s")
	case h.fly.leaseTTL < time.Second || h.fly.leaseTTL > 10*time.Minute:
		return usageError("gateway", "--fly-lease-ttl %s: must be between 1s and 10m, e.g. 30s", h.fly.leaseTTL)
	case h.provider == "fly" && h.fly.app == "":
		return usageError("gateway", "--fly-app is required for the fly provider")
	case h.provider == "fly" && os.Getenv("FLY_API_TOKEN") == "":
		return usageError("gateway", "the fly provider needs a Fly API token in $FLY_API_TOKEN")
	}
	return nil
}

func (a *accessFlags) validate() error {
	switch {
	case a.oidcAudience == "":
		return usageError("gateway", "--oidc-audience cannot be empty")
	case !strings.HasPrefix(a.oidcIssuer, "https://"):
		return usageError("gateway", "--oidc-issuer %q must be an https URL", a.oidcIssuer)
	}
	return nil
}

func (c *caFlags) validate() error {
	switch {
	case c.listen == "":
		return usageError("gateway", "engines enrol at the CA API: --ca-listen cannot be empty")
	case c.certTTL < certs.MinTTL || c.certTTL > certs.ServerTTL:
		return usageError("gateway", "--cert-ttl must be between %s and %s", certs.MinTTL, certs.ServerTTL)
	case c.maxClientTTL < certs.MinTTL:
		return usageError("gateway", "--max-client-ttl must be at least %s", certs.MinTTL)
	case c.clientTTL < certs.MinTTL || c.clientTTL > c.maxClientTTL:
		return usageError("gateway", "--client-ttl must be between %s and --max-client-ttl", certs.MinTTL)
	}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return usageError("gateway", "--ca-listen %q: %v", c.listen, err)
	}
	if err := certs.CheckDBURL(c.db); err != nil {
		return usageError("gateway", "--ca-db %v", err)
	}
	if c.create && c.db != "" {
		return usageError("gateway", "--ca-init makes a CA of this gateway's own; gateways sharing --ca-db share one CA: create it once with 'certs init' and copy its directory to each")
	}
	if c.staleness < time.Second {
		return usageError("gateway", "--revocation-staleness %s: must be at least 1s, e.g. 60s", c.staleness)
	}
	return nil
}

func (p *poolFlags) validate() error {
	switch {
	case p.engines < 1:
		return usageError("gateway", "--engines must be at least 1")
	case p.prefer != "home" && p.prefer != "warm":
		return usageError("gateway", "--prefer must be home or warm")
	case !validSoftLimit(p.softLimit, p.hardLimit):
		return usageError("gateway", "need 1 <= --soft-limit <= --hard-limit")
	case p.minRunning < 0:
		return usageError("gateway", "--min-running must not be negative")
	case p.idle <= 0:
		return usageError("gateway", "--idle must be positive")
	case p.wakeTimeout <= 0:
		return usageError("gateway", "--wake-timeout must be positive")
	}
	return nil
}

func (fr *frontFlags) validate() error {
	if fr.maxConnsPerIdentity < 1 {
		return usageError("gateway", "--max-conns-per-identity must be at least 1")
	}
	if fr.engineAhead < 0 || fr.engineAhead > maxEngineAhead {
		return usageError("gateway", "--engine-ahead must be between 0 and %d", maxEngineAhead)
	}
	if _, _, err := net.SplitHostPort(fr.listen); err != nil {
		return usageError("gateway", "--listen %q: %v", fr.listen, err)
	}
	if fr.admin != "" {
		if _, _, err := net.SplitHostPort(fr.admin); err != nil {
			return usageError("gateway", "--admin %q: %v", fr.admin, err)
		}
	}
	return nil
}

// policy is the pool's placement policy.
func (p *poolFlags) policy() gateway.Policy {
	return gateway.Policy{Soft: p.softLimit, Hard: p.hardLimit, PreferWarm: p.prefer == "warm", MinRunning: p.minRunning}
}

// engineIDs are the ids of a pool whose host numbers its engines (local,
// exec): engine-0 … engine-(N-1).
func (p *poolFlags) engineIDs() []string {
	ids := make([]string, p.engines)
	for i := range ids {
		ids[i] = "engine-" + strconv.Itoa(i)
	}
	return ids
}
