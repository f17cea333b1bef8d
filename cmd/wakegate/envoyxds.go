package main

import (
	"context"
	"io"
	"time"

	"github.com/wakegate/wakegate/connect"
	"github.com/wakegate/wakegate/envoy"
)

func runEnvoyXDS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("envoy xds", "envoy xds [--listen ADDR] [--role client] --gateway HOST:PORT [--envoy-listen ADDR] CREDENTIALS\n  wakegate envoy xds [--listen ADDR] --role engine --upstream unix:///PATH --envoy-listen IP:PORT CREDENTIALS", `
Serves one Envoy (node --node) over ADS, go-control-plane's snapshot cache
and state-of-the-world server: its listener (on --envoy-listen) and cluster
for the role, as 'wakegate envoy bootstrap' describes them, and the
certificate with its key and the CA root as SDS secrets. The certificate is
renewed through the CA at two thirds of its life and pushed as a new
snapshot version: Envoy swaps it with no restart, and open connections are
not disturbed. If Envoy rejects a snapshot, its error is logged and the one
it last applied is served again. Start Envoy with the bootstrap of
'wakegate envoy bootstrap --role ROLE --xds ADDR'.

This server hands out a private key to whoever connects, so it listens
where only this machine can reach it:
  --listen unix:///PATH   a socket only this user may open (mode 0600);
                          the safest, and what an Envoy container reaches
                          through a shared volume.
  --listen HOST:PORT      loopback only (127.0.0.1, ::1, localhost): any
                          user of this machine can connect.
Any other address is refused unless --unsafe-listen. Streams from another
node id are refused (the id is Envoy's own claim: it is not what secures
this server; the listener is).
`+envoyCredsHelp, stdout, stderr)
	var t envoyTarget
	var f envoyCredFlags
	var listen string
	var unsafeListen bool
	fs.StringVar(&listen, "listen", "127.0.0.1:18000", "the xDS server's address: unix:///PATH or a loopback HOST:PORT")
	fs.BoolVar(&unsafeListen, "unsafe-listen", false, "allow an xDS --listen other machines can reach: whoever connects gets the private key")
	fs.StringVar(&t.role, "role", "client", "client (CI side) or engine (engine machine)")
	fs.StringVar(&t.gateway, "gateway", "", "role client: the gateway's mTLS address HOST:PORT")
	fs.StringVar(&t.serverName, "server-name", "", "role client: name to verify in the gateway's certificate (default: the --gateway host)")
	fs.StringVar(&t.listen, "envoy-listen", "", "Envoy's listener: IP:PORT or unix:///PATH (role client default 127.0.0.1:9080; role engine: required)")
	fs.BoolVar(&t.unsafeListen, "unsafe-envoy-listen", false, "role client: allow an --envoy-listen other machines can reach (they build as this identity)")
	fs.StringVar(&t.upstream, "upstream", "", "role engine: BuildKit's address, unix:///PATH (or IP:PORT)")
	fs.StringVar(&t.node, "node", "", "the node id served (default wakegate-ROLE), as in the bootstrap")
	addEnvoyCredFlags(fs, &f)
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("envoy xds", "unexpected argument %q", fs.Arg(0))
	}
	if err := t.config("envoy xds", "--envoy-listen", "--unsafe-envoy-listen"); err != nil {
		return err
	}
	addr, err := connect.ParseListenAddress(listen)
	if err != nil {
		return usageError("envoy xds", "--listen %q: %v", listen, err)
	}
	if !addr.LocalOnly() && !unsafeListen {
		return usageError("envoy xds", "--listen %s is reachable from other machines, and this server hands its private key to whoever connects; listen on unix:///PATH (mode 0600) or 127.0.0.1:PORT, or pass --unsafe-listen", listen)
	}
	if err := validateEnvoyCreds("envoy xds", t.cfg.Role, &f); err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	// Opened before enrolment: a taken port fails without spending a
	// token.
	ln, err := connect.Listen(addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	renewer, roots, err := envoyIdentity(ctx, t.cfg.Role, &f, stderr, log)
	if err != nil {
		return err
	}
	srv, err := envoy.NewServer(envoy.ServerConfig{Envoy: t.cfg, Creds: renewer, Roots: roots, Log: log, StopGrace: 5 * time.Second})
	if err != nil {
		return err
	}
	stopRenewing := goBackground(renewer.Run)
	defer stopRenewing()
	switch {
	case addr.Network == "unix":
		log.Info("xds listening", "addr", ln.Addr().String(), "node", t.cfg.NodeID, "role", string(t.cfg.Role), "local", "unix socket, mode 0600: this user only")
	case addr.LocalOnly():
		log.Info("xds listening", "addr", ln.Addr().String(), "node", t.cfg.NodeID, "role", string(t.cfg.Role), "local", "loopback: any user of this machine can connect (unix:///PATH admits this user only)")
	default:
		log.Warn("xds listening where other machines can reach it (--unsafe-listen): whoever connects gets this identity's private key", "addr", ln.Addr().String(), "node", t.cfg.NodeID, "role", string(t.cfg.Role))
	}
	if t.cfg.Role == envoy.Client && !t.cfg.ListenLocalOnly() {
		log.Warn("--unsafe-envoy-listen: other machines can reach Envoy's listener, and whoever connects builds as this identity", "envoy_listen", t.cfg.Listen)
	}
	err = srv.Run(ctx, ln)
	log.Info("xds stopped", "addr", ln.Addr().String())
	return err
}
