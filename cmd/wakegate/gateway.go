package main

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"os"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/engine"
)

func runGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("gateway", "gateway --ca-dir CA --state DIR [flags]", `
Runs the mTLS gateway. It accepts TLS 1.3 connections that present a client
certificate from the CA, routes each client identity to its engine, wakes a
stopped engine on demand (holding the connection until BuildKit answers),
proxies the stream, and stops the engine --idle after its last connection
closes.

It embeds the certificate authority of --ca-dir (smallstep's, with its
database) and serves the step-ca API on --ca-listen, where 'wakegate connect
--token' enrols and every client renews. With --policy, a CI job enrols there
with its own OIDC token ('connect --oidc github'): no stored secret. The
policy decides who may connect, at enrolment and again at every handshake;
its file is re-read when it changes (within 2 s). Its own certificates are issued by
that authority and renewed at two thirds of their life. Every handshake is
checked against the CA's revocation records.

Provider "local" (the default) runs each engine as a 'wakegate engine'
process on this machine (the same entrypoint remote engine machines run),
with its cache under --state/engine-N; run as root with runc installed.
With --engine dagger they run Dagger's engine from --engine-bin, each in its
own mount, PID and network namespaces (docs/dagger.md).
Before stopping an idle engine the gateway asks the engine itself whether
anyone (through any gateway) still uses it.

`+gatewayEndpoints(), stdout, stderr)
	var f gatewayFlags
	f.define(fs)
	if err := parse(fs, args, stdout); err != nil {
		return helpOK(err)
	}
	if fs.NArg() > 0 {
		return usageError("gateway", "unexpected argument %q", fs.Arg(0))
	}
	if f.config == "" {
		f.config = os.Getenv("WAKEGATE_CONFIG")
	}
	if err := applyConfig(fs, f.config, os.Getenv); err != nil { // config.go
		return err
	}
	if err := f.validate(); err != nil {
		return err
	}
	log, err := newFormatLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	// What can be judged before a socket opens: the engine host, the
	// policy file, the CA and its password.
	bins, err := f.host.check()
	if err != nil {
		return err
	}
	pol, err := loadPolicy(f.access.policyFile, f.access.oidcIssuer, log)
	if err != nil {
		return err
	}
	if err := f.ca.initIfMissing(log); err != nil { // gatewaycainit.go
		return err
	}
	ca, err := loadCA(f.ca.dir, f.ca.passwordFile)
	if err != nil {
		return err
	}
	ca.DB = f.ca.db
	fileLimit, err := raiseFileLimit()
	if err != nil {
		return err
	}

	caSvc, err := f.startAuthority(ca, pol, fileLimit, log)
	if err != nil {
		return err
	}
	defer caSvc.Close()
	stopPolicy := goBackground(pol.run)
	defer stopPolicy()
	rctx, stopRenewing := context.WithCancel(context.Background())
	defer stopRenewing()
	gwCert, err := caSvc.selfRenewing(rctx, "wakegate-gateway", serverSANs(f.front.listen, f.front.sans), log)
	if err != nil {
		return err
	}
	ec := newEngineClient(gwCert.Current, ca, caSvc)
	ops := newOpsView(ca, gwCert.Current) // gatewayops.go: readiness, certificates, API calls
	ops.engineCerts, ops.cache = ec.EngineCerts, cacheUsage(ec)
	provider, err := f.newProvider(ctx, hostCA{ca: ca, svc: caSvc, observe: ops.observe}, bins, ec, log)
	if err != nil {
		return err
	}
	defer closeHost(provider) // after the pool's close below has stopped its engines
	rt, err := f.newRouting(ctx, provider, ec, certs.RefuseRevoked(certs.ServerTLS(gwCert.Current, ca.Pool()), caSvc.auth.IsRevoked), pol.allow, log)
	if err != nil {
		return err
	}
	defer rt.pool.Close()
	if err := ops.attach(rt.pool, provider); err != nil {
		return err
	}
	caSvc.auth.OnKill(rt.srv.CloseSerial)
	if err := f.webhook.mount(caSvc, rt.pool, pol, log); err != nil { // gatewaywebhook.go
		return err
	}
	return f.serve(ctx, rt, ops, log)
}

// newEngineClient is the gateway's one engine client: it dials, probes and
// asks every engine, presenting the gateway's certificate, trusting the
// CA's root, and refusing an engine whose certificate the CA has revoked
// (checked at every dial, as a client's is at the gateway's port).
func newEngineClient(cert func() *tls.Certificate, ca *certs.CA, caSvc *caService) *engine.Client {
	return &engine.Client{TLS: certs.ClientTLS(cert, ca.Pool(), ""), IsRevoked: caSvc.auth.IsEngineRevoked}
}

// startAuthority serves the embedded CA's API, with OIDC enrolment judged
// by the policy.
func (f *gatewayFlags) startAuthority(ca *certs.CA, pol *gatewayPolicy, fileLimit uint64, log *slog.Logger) (*caService, error) {
	limits := certs.DefaultAPILimits
	limits.MaxConns = caAPIConns(fileLimit)
	log.Info("open-files limit", "limit", fileLimit, "ca_api_max_conns", limits.MaxConns)
	caSvc, err := startCA(ca, f.ca.listen, f.ca.sans, certs.AuthorityConfig{MaxClientTTL: f.ca.maxClientTTL, DefaultClientTTL: f.ca.clientTTL, RevocationStaleness: f.ca.staleness, Log: log}, limits, f.ca.certTTL, log)
	if err != nil {
		return nil, err
	}
	if err := caSvc.auth.EnableOIDC(certs.OIDCConfig{
		Issuer: f.access.oidcIssuer, Audience: f.access.oidcAudience,
		Enabled: pol.enabled, Allow: pol.allowClaims, Log: log,
	}); err != nil {
		caSvc.Close()
		return nil, err
	}
	return caSvc, nil
}
