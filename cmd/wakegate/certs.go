package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/wakegate/wakegate/certs"
)

func runCerts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub := ""
	if len(args) > 0 {
		sub = args[0]
	}
	switch sub {
	case "init":
		return helpOK(runCertsInit(args[1:], stdout, stderr))
	case "issue":
		return helpOK(runCertsIssue(args[1:], stdout, stderr))
	case "-h", "--help", "-help", "help":
		certsUsage(stdout)
		return nil
	}
	if sub != "" {
		fmt.Fprintf(stderr, "wakegate certs: unknown subcommand %q\n\n", sub)
	}
	certsUsage(stderr)
	return errUsage
}

func certsUsage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  wakegate certs <subcommand> [flags]

Subcommands:
  init    create a root and an intermediate CA in a directory
  issue   issue client credentials (client.crt, client.key, ca.crt) for an identity

Run 'wakegate certs <subcommand> -h' for its flags.
`)
}

func runCertsInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs init", "certs init --dir CA [--name NAME]", `
Creates a root CA and an intermediate CA in CA (step-ca's layout: certs/ for
certificates, secrets/ for keys, which are written 0600). The gateway issues
its own server certificate from the intermediate at start; 'certs issue'
issues client credentials. Refuses to overwrite an existing CA.`, stdout, stderr)
	dir := fs.String("dir", "", "CA directory to create (required)")
	name := fs.String("name", "wakegate", "name that prefixes the CA certificates' common names")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *dir == "" {
		return usageError("certs init", "--dir is required")
	}
	ca, err := certs.Init(*dir, *name)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created CA in %s\nroot fingerprint: %s\n", *dir, ca.Fingerprint())
	return nil
}

func runCertsIssue(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs issue", "certs issue --dir CA --name NAME [--ttl 1h] --out DIR", `
Issues a client certificate for identity NAME and writes DIR/client.crt (the
certificate and the intermediate), DIR/client.key (0600) and DIR/ca.crt (the
root), which 'wakegate connect --creds DIR' reads. The gateway routes each
identity to the engine that holds its cache.`, stdout, stderr)
	dir := fs.String("dir", "", "CA directory made by 'certs init' (required)")
	name := fs.String("name", "", "client identity, the certificate's common name (required)")
	ttl := fs.Duration("ttl", certs.DefaultClientTTL, fmt.Sprintf("certificate lifetime (at most %s)", certs.MaxClientTTL))
	out := fs.String("out", "", "directory to write the credentials to (required)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	switch {
	case *dir == "":
		return usageError("certs issue", "--dir is required")
	case *name == "":
		return usageError("certs issue", "--name is required")
	case *out == "":
		return usageError("certs issue", "--out is required")
	}
	ca, err := certs.Load(*dir)
	if err != nil {
		return err
	}
	leaf, err := ca.Issue(certs.Client, *name, nil, *ttl)
	if err != nil {
		return err
	}
	if err := ca.WriteClientCreds(*out, leaf); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "issued %q (serial %s), valid until %s\nwrote %s, %s, %s\n",
		*name, leaf.Cert.SerialNumber.Text(16), leaf.Cert.NotAfter.UTC().Format(time.RFC3339),
		filepath.Join(*out, certs.ClientCertFile), filepath.Join(*out, certs.ClientKeyFile), filepath.Join(*out, certs.CACertFile))
	return nil
}
