package main

import (
	"context"
	"flag"
	"io"
)

func runConnect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("connect", "connect --gateway HOST:PORT[,HOST:PORT...] (--oidc github | --token T | --creds DIR) [--ca-url URL --ca-fingerprint FP] [--wait | --background --pid-file FILE | -- CMD [ARGS...]]", `
Runs the sidecar: plain connections on --listen (for buildctl, buildx or
Dagger), carried over mTLS to the gateway.

Gateways: --gateway takes several addresses, joined by commas or with
--gateway repeated, for gateways serving one pool; a name with several DNS
records is tried address by address. Each connection starts from the
address that last worked; one that is down, resets the handshake or does
not answer within 15s is passed over for the next, and the log says so once
per change. A certificate refused either way is reported, not passed over.
The name verified is --server-name, or else each address's host.

Connections made ahead: --ahead (2) connections to the gateway are kept
open, their TLS handshake done, and a new local connection starts on one.
The gateway chooses and wakes an engine for one only at its first byte, so
unused they wake no engine and keep none awake; they are made again every
30s and after a certificate renewal, and closed a minute after the last
local connection (an idle sidecar holds no connection to the gateway). The
client must speak first, as BuildKit and Dagger clients do; for anything
else use --ahead 0.

Credentials come from one of:
  --oidc github   in a GitHub Actions job with 'permissions: id-token: write':
                  the job's own OIDC token (audience --oidc-audience) is
                  exchanged at the CA API at --ca-url for a certificate that
                  names the repository. No stored secret. Renewal asks GitHub
                  for a fresh token and enrols again.
  --token T       a single-use token ('wakegate certs token'; also
                  $WAKEGATE_TOKEN or --token-file) exchanged at --ca-url.
  --creds DIR     client.crt, client.key and ca.crt from 'wakegate certs issue'.
The CA is trusted by its root's fingerprint (--ca-fingerprint). With --ca-url
the certificate is renewed at two thirds of its life; open connections are
not disturbed.

Modes:
  -- CMD ARGS     wake the engine and wait until it is ready (printing
                  progress), run CMD with BUILDKIT_HOST and
                  _EXPERIMENTAL_DAGGER_RUNNER_HOST set to the sidecar's
                  address (tcp://HOST:PORT or unix:///PATH), keep the engine
                  awake while CMD runs, and exit with CMD's status.
  --background    enrol once, wake the engine and wait until it is ready, then
                  detach and serve (its log goes to --log-file): prints the
                  address, writes the sidecar's process id to --pid-file and,
                  where $GITHUB_ENV is set, appends BUILDKIT_HOST and
                  _EXPERIMENTAL_DAGGER_RUNNER_HOST to it. The engine stays awake
                  while the sidecar runs. Stop it with: kill $(cat FILE)
  --wait          wake the engine, wait until it is ready, and exit 0.
  (none)          serve until interrupted; a connection to a stopped engine is
                  held by the gateway while it wakes.
With -- CMD or --background and no --listen, a free loopback port is chosen,
so that concurrent jobs on one runner never collide.

Listening (whoever connects to the sidecar builds as this job):
  --listen HOST:PORT       TCP on a loopback host: 127.0.0.1 (or 127.x.y.z),
                           ::1 or localhost. Any other host (0.0.0.0, :: and
                           an empty host included) is reachable from other
                           machines, and refused unless --unsafe-listen.
  --listen unix:///PATH    a unix socket only this user may open (mode 0600,
                           never wider), for runners shared with other users;
                           BuildKit and Dagger clients accept unix:// hosts.
                           A relative PATH is made absolute. A stale socket at
                           PATH is replaced; a live one, or anything that is
                           not a socket, is refused. It is removed when the
                           sidecar stops.`, stdout, stderr)
	var f connectFlags
	f.define(fs)
	if err := parse(fs, args, stdout); err != nil {
		return helpOK(err)
	}
	fs.Visit(func(fl *flag.Flag) { f.local.set = f.local.set || fl.Name == "listen" })
	cmdArgs := fs.Args()
	if !f.local.set && (f.mode.background || len(cmdArgs) > 0) {
		f.local.listen = "127.0.0.1:0"
	}
	if err := f.validate(cmdArgs); err != nil {
		return err
	}
	if f.mode.background && !isBackgroundChild() {
		return startBackground(ctx, args, &f, stdout, stderr)
	}
	return serveConnect(ctx, &f, cmdArgs, stdout, stderr)
}
