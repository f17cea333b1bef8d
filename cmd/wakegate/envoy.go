package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/envoy"
)

func runEnvoy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "envoy", []subcommand{
		{"bootstrap", runEnvoyBootstrap},
		{"xds", runEnvoyXDS},
		{"creds", runEnvoyCreds},
	}, envoyUsage, args, stdout, stderr)
}

func envoyUsage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  wakegate envoy <subcommand> [flags]

For teams that run Envoy: an Envoy on the CI side in place of 'wakegate
connect' (role client), or on the engine machine in place of 'wakegate
engine''s mTLS front (role engine), with certificates that renew themselves.

Subcommands:
  bootstrap  write an Envoy v3 bootstrap (JSON) for a role: static, with
             certificates read from a credentials directory (--creds), or
             with everything from the xDS server (--xds)
  xds        serve Envoy its listener, cluster and certificates over ADS,
             renewing the certificate at two thirds of its life and pushing it
  creds      keep a credentials directory fresh for a static bootstrap:
             enrol, write, renew and rewrite

See docs/envoy.md. Run 'wakegate envoy <subcommand> -h' for its flags.
`)
}

// envoyTarget is what an Envoy is to do, as flags give it.
type envoyTarget struct {
	role, listen, gateway, serverName, upstream, node string
	unsafeListen                                      bool
	cfg                                               envoy.Config // filled by config
}

// config checks the flags and fills t.cfg. cmd names the subcommand for
// errors, listenFlag the flag of Envoy's listener.
func (t *envoyTarget) config(cmd, listenFlag, unsafeFlag string) error {
	role, err := envoy.ParseRole(t.role)
	if err != nil {
		return usageError(cmd, "--role: %v", err)
	}
	if role == envoy.Client && t.listen == "" {
		t.listen = "127.0.0.1:9080"
	}
	t.cfg = envoy.Config{Role: role, NodeID: t.node, Listen: t.listen, Gateway: t.gateway, ServerName: t.serverName, Upstream: t.upstream}
	switch {
	case role == envoy.Engine && t.listen == "":
		return usageError(cmd, "the engine role needs %s IP:PORT, where the gateway dials the engine (0.0.0.0:8372 for every interface)", listenFlag)
	case role == envoy.Client && t.gateway == "":
		return usageError(cmd, "the client role needs --gateway HOST:PORT (the gateway's mTLS address)")
	}
	if err := t.cfg.Validate(); err != nil {
		var fe *envoy.FieldError
		if errors.As(err, &fe) {
			flag := map[string]string{"listen": listenFlag}[fe.Field]
			if flag == "" {
				flag = "--" + fe.Field
			}
			return usageError(cmd, "%s %q: %v", flag, fe.Value, fe.Err)
		}
		return usageError(cmd, "%v", err)
	}
	// Whoever reaches a client-role listener builds as this identity, as
	// with 'wakegate connect --listen'.
	if role == envoy.Client && !t.cfg.ListenLocalOnly() && !t.unsafeListen {
		return usageError(cmd, "%s %s is reachable from other machines: whoever reaches it builds as this identity; listen on 127.0.0.1:PORT or unix:///PATH, or pass %s (an Envoy in a container listens on its own interface: publish the port on the host's 127.0.0.1 only)", listenFlag, t.listen, unsafeFlag)
	}
	return nil
}

func runEnvoyBootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("envoy bootstrap", "envoy bootstrap [--role client] --gateway HOST:PORT [--listen ADDR] (--creds DIR | --xds ADDR) [--out FILE]\n  wakegate envoy bootstrap --role engine --upstream unix:///PATH --listen IP:PORT (--creds DIR | --xds ADDR) [--out FILE]", `
Writes an Envoy v3 bootstrap in JSON to stdout, or to --out FILE.

Role client (for CI jobs; in place of 'wakegate connect'): a listener on
--listen whose TCP proxy reaches the gateway at --gateway over mTLS: TLS 1.3,
SNI and a check that the gateway's certificate names --server-name (default:
the --gateway host), ALPN wakegate-proxy/1, this identity's certificate.
Whoever reaches the listener builds as this identity: it must be loopback or
a unix socket (mode 0600) unless --unsafe-listen.

Role engine (on an engine machine; in place of 'wakegate engine''s mTLS
front): a listener on --listen that terminates mTLS, admits only the
gateway's certificate (its wakegate://role/gateway URI SAN, from the same
CA), proxies to BuildKit at --upstream, and answers the gateway's readiness
probe (GET /ready) from BuildKit's gRPC health service.

Two modes:
  --creds DIR   static: Envoy reads the certificate, key and CA root from
                DIR (absolute, as Envoy sees it) through two SDS files this
                command writes there (envoy-sds-cert.json, envoy-sds-ca.json),
                and reloads them when a file is renamed into DIR (Envoy's
                watched_directory). The role
                client reads client.crt, client.key, ca.crt (what 'wakegate
                certs issue --out' writes); the role engine engine.crt,
                engine.key, ca.crt. Keep them fresh with 'wakegate envoy
                creds --out DIR', which renews and rewrites them.
  --xds ADDR    dynamic: the bootstrap holds only the node id and the way to
                the xDS server ('wakegate envoy xds') at ADDR, as Envoy
                reaches it (unix:///PATH or IP:PORT); the listener, cluster
                and certificates come from there. --gateway, --listen and
                --upstream then go to 'wakegate envoy xds', not here.

Every resource is checked with Envoy's generated validation rules, and the
JSON is read back before it is written.`, stdout, stderr)
	var t envoyTarget
	fs.StringVar(&t.role, "role", "client", "client (CI side) or engine (engine machine)")
	fs.StringVar(&t.gateway, "gateway", "", "role client: the gateway's mTLS address HOST:PORT")
	fs.StringVar(&t.serverName, "server-name", "", "role client: name to verify in the gateway's certificate (default: the --gateway host)")
	fs.StringVar(&t.listen, "listen", "", "Envoy's listener: IP:PORT or unix:///PATH (role client default 127.0.0.1:9080; role engine: required)")
	fs.BoolVar(&t.unsafeListen, "unsafe-listen", false, "role client: allow a --listen other machines can reach (they build as this identity)")
	fs.StringVar(&t.upstream, "upstream", "", "role engine: BuildKit's address, unix:///PATH (or IP:PORT)")
	fs.StringVar(&t.node, "node", "", "the Envoy's node id (default wakegate-ROLE); 'wakegate envoy xds --node' must match")
	creds := fs.String("creds", "", "static mode: the credentials directory, absolute as Envoy sees it")
	xds := fs.String("xds", "", "xDS mode: the xDS server's address as Envoy reaches it, unix:///PATH or IP:PORT")
	out := fs.String("out", "", "write the bootstrap to FILE instead of stdout")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("envoy bootstrap", "unexpected argument %q", fs.Arg(0))
	}
	var b *bootstrapv3.Bootstrap
	switch {
	case (*creds == "") == (*xds == ""):
		return usageError("envoy bootstrap", "give one of --creds DIR (static certificates from files) and --xds ADDR (everything from 'wakegate envoy xds')")
	case *xds != "":
		if t.gateway != "" || t.listen != "" || t.upstream != "" || t.serverName != "" {
			return usageError("envoy bootstrap", "with --xds the bootstrap holds only the node id and the xDS server: give --gateway, --server-name, --listen (as --envoy-listen) and --upstream to 'wakegate envoy xds'")
		}
		role, err := envoy.ParseRole(t.role)
		if err != nil {
			return usageError("envoy bootstrap", "--role: %v", err)
		}
		c := envoy.Config{Role: role, NodeID: t.node}
		if c.NodeID == "" {
			c.NodeID = envoy.DefaultNodeID(role)
		}
		if b, err = c.XDSBootstrap(*xds); err != nil {
			return usageError("envoy bootstrap", "--xds: %v", err)
		}
	default:
		if err := t.config("envoy bootstrap", "--listen", "--unsafe-listen"); err != nil {
			return err
		}
		dir, err := filepath.Abs(*creds)
		if err != nil {
			return err
		}
		if err := checkEnvoyCreds(t.cfg.Role, dir); err != nil {
			return err
		}
		if b, err = t.cfg.StaticBootstrap(dir); err != nil {
			return err
		}
		if err := envoy.WriteSDSFiles(t.cfg.Role, dir); err != nil {
			return err
		}
		files, _ := envoy.SDSFiles(t.cfg.Role, dir)
		var names []string
		for name := range files {
			names = append(names, filepath.Join(dir, name))
		}
		sort.Strings(names)
		fmt.Fprintf(stderr, "wakegate: wrote %v, the SDS files the bootstrap names\n", names)
	}
	data, err := envoy.MarshalJSON(b, &bootstrapv3.Bootstrap{})
	if err != nil {
		return err
	}
	if *out == "" {
		_, err := stdout.Write(data)
		return err
	}
	if err := writeFileAtomic(*out, data, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wakegate: wrote %s\n", *out)
	return nil
}

// checkEnvoyCreds refuses a credentials directory Envoy could not use: a
// file missing, or credentials that do not load or have expired.
func checkEnvoyCreds(role envoy.Role, dir string) error {
	if err := envoy.CheckCreds(role, dir); err != nil {
		return err
	}
	if role == envoy.Client {
		_, _, err := certs.LoadClientCreds(dir)
		return err
	}
	_, _, err := loadEngineCreds(dir)
	return err
}

// writeFileAtomic writes data to path through a temporary file renamed
// into place.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
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
