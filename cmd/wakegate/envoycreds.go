package main

import (
	"context"
	"crypto/tls"
	"io"
	"path/filepath"
	"time"

	"github.com/wakegate/wakegate/envoy"
)

func runEnvoyCreds(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("envoy creds", "envoy creds [--role client] --out DIR CREDENTIALS", `
Keeps a credentials directory fresh for an Envoy started with 'wakegate
envoy bootstrap --creds DIR': obtains the certificate, writes it into --out
(role client: client.crt, client.key, ca.crt; role engine: engine.crt,
engine.key, ca.crt; the key with mode 0600, never printed), renews it at two
thirds of its life and writes it again, until interrupted. Each file is
renamed into place, which is what Envoy's watch on the directory reacts to:
Envoy swaps the certificate with no restart. The key is renamed before the
certificate; in between Envoy may refuse a mismatched pair and keep the old
one until the certificate follows.

Run it in the background for the life of the Envoy (in GitHub Actions, a
step with '&'; the job's end stops it).
`+envoyCredsHelp, stdout, stderr)
	var f envoyCredFlags
	role := fs.String("role", "client", "client (CI side) or engine (engine machine)")
	out := fs.String("out", "", "credentials directory to write (required)")
	addEnvoyCredFlags(fs, &f)
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("envoy creds", "unexpected argument %q", fs.Arg(0))
	}
	r, err := envoy.ParseRole(*role)
	if err != nil {
		return usageError("envoy creds", "--role: %v", err)
	}
	if *out == "" {
		return usageError("envoy creds", "--out DIR is required: the directory Envoy reads (bootstrap --creds DIR)")
	}
	dir, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	if err := validateEnvoyCreds("envoy creds", r, &f); err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	renewer, roots, err := envoyIdentity(ctx, r, &f, stderr, log)
	if err != nil {
		return err
	}
	stopRenewing := goBackground(renewer.Run)
	defer stopRenewing()
	var last *tls.Certificate
	for {
		changed := renewer.Changed() // before Current: no renewal is missed
		if cert := renewer.Current(); cert != last {
			if err := envoy.WriteCreds(r, dir, cert, roots); err != nil {
				if last == nil {
					return err
				}
				// The previous files stay; Envoy keeps using them.
				log.Error("renewed credentials not written; the previous ones stay", "dir", dir, "err", err)
			} else {
				last = cert
				log.Info("credentials written", "dir", dir, "identity", cert.Leaf.Subject.CommonName,
					"serial", cert.Leaf.SerialNumber.String(), "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}
