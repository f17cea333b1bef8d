package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/identity"
)

func runCerts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	noCtx := func(f func([]string, io.Writer, io.Writer) error) func(context.Context, []string, io.Writer, io.Writer) error {
		return func(_ context.Context, a []string, o, e io.Writer) error { return f(a, o, e) }
	}
	return dispatch(ctx, "certs", []subcommand{
		{"init", noCtx(runCertsInit)},
		{"issue", runCertsIssue},
		{"token", noCtx(runCertsToken)},
		{"fingerprint", noCtx(runCertsFingerprint)},
		{"revoke", runCertsRevoke},
		{"list", runCertsList},
		{"rotate-intermediate", noCtx(runCertsRotate)},
	}, certsUsage, args, stdout, stderr)
}

func certsUsage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  wakegate certs <subcommand> [flags]

Subcommands:
  init         create a root and an intermediate CA in a directory
  issue        issue client credentials (client.crt, client.key, ca.crt) for an identity
  token        print a single-use token that 'wakegate connect --token' exchanges for a certificate
  fingerprint  print the root's SHA-256 fingerprint, for --ca-fingerprint
  revoke       revoke a certificate by serial, or every valid one of an identity
  list         list issued certificates with identity, expiry and status
  rotate-intermediate
               replace the intermediate CA; certificates it issued stay valid

The CA's private keys are encrypted with the password from --password-file or
$WAKEGATE_CA_PASSWORD. Commands that issue work whether or not a gateway is
running on the CA directory: while one is, they go through its CA API.

Run 'wakegate certs <subcommand> -h' for its flags. The CA directory is
--ca-dir, an identity --identity, a lifetime --cert-ttl or --token-ttl; the
earlier --dir, --name and --ttl still work until the next release.
`)
}

func runCertsInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs init", "certs init --ca-dir CA [--ca-name NAME] [--password-file F | --no-password]", `
Creates a root CA, an intermediate CA and the provisioner keys of the
embedded smallstep authority in CA (step-ca's layout: certs/ for
certificates, secrets/ for keys, written 0600; db/ for its database). Keys
are encrypted with the password from --password-file or
$WAKEGATE_CA_PASSWORD; without one it refuses unless --no-password (for
demos and tests). Prints the root's fingerprint, for --ca-fingerprint.
Refuses to overwrite an existing CA.`, stdout, stderr)
	dir := fs.String(flagCADir, "", "CA directory to create (required)")
	renamed(fs, "dir", flagCADir)
	name := fs.String(flagCAName, "wakegate", "name that prefixes the CA certificates' common names")
	renamed(fs, "name", flagCAName)
	pwFile := fs.String("password-file", "", "file holding the password that encrypts the CA's keys")
	noPassword := fs.Bool("no-password", false, "store the CA's keys unencrypted (demos and tests only)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *dir == "" {
		return usageError("certs init", "--ca-dir is required")
	}
	password, err := caPassword(*pwFile)
	if err != nil {
		return err
	}
	switch {
	case password == nil && !*noPassword:
		return usageError("certs init", "the CA's keys need a password: set WAKEGATE_CA_PASSWORD or --password-file, or pass --no-password for a demo")
	case password != nil && *noPassword:
		return usageError("certs init", "--no-password conflicts with the password given")
	}
	ca, err := certs.Init(*dir, *name, password)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created CA in %s\nroot fingerprint: %s\n", *dir, ca.Fingerprint())
	return nil
}

// loadCA loads the CA in dir with the password from file or the environment.
func loadCA(dir, pwFile string) (*certs.CA, error) {
	password, err := caPassword(pwFile)
	if err != nil {
		return nil, err
	}
	return certs.Load(dir, password)
}

// caDBFlag defines --ca-db on an operator command: the database the
// gateways share (docs/ha.md), $WAKEGATE_CA_DB by default.
func caDBFlag(fs *flag.FlagSet) *string {
	return fs.String("ca-db", "", "the CA's database when gateways share one: postgresql://USER@HOST:PORT/DB, as their --ca-db (default: $WAKEGATE_CA_DB; unset: the CA directory's own)")
}

// openOperator loads the CA and opens it for an operator command: in
// process, or through a running gateway's API.
//
// db is the CA's shared database (--ca-db), "" for the CA directory's own.
func openOperator(dir, pwFile, db string, stderr io.Writer) (*certs.CA, *certs.Operator, error) {
	if db == "" {
		db = os.Getenv("WAKEGATE_CA_DB") // not the flag's default: help would print it, password and all
	}
	if err := certs.CheckDBURL(db); err != nil {
		return nil, nil, fmt.Errorf("--ca-db %w", err)
	}
	ca, err := loadCA(dir, pwFile)
	if err != nil {
		return nil, nil, err
	}
	ca.DB = db
	noteReencrypted(ca, stderr)
	op, err := ca.Operator()
	if err != nil {
		return nil, nil, err
	}
	return ca, op, nil
}

func runCertsIssue(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs issue", "certs issue --ca-dir CA --identity NAME [--cert-ttl 1h] --out DIR", `
Issues a client certificate for identity NAME and writes DIR/client.crt (the
certificate and the intermediate), DIR/client.key (0600) and DIR/ca.crt (the
root), which 'wakegate connect --creds DIR' reads. The gateway routes each
identity to the engine that holds its cache. The certificate is recorded in
the CA's database; while a gateway serves the CA, it is issued through the
gateway's CA API.`, stdout, stderr)
	dir := fs.String(flagCADir, "", "CA directory made by 'certs init' (required)")
	renamed(fs, "dir", flagCADir)
	name := fs.String(flagIdentity, "", "client identity, the certificate's common name (required)")
	renamed(fs, "name", flagIdentity)
	ttl := fs.Duration(flagCertTTL, certs.DefaultClientTTL, fmt.Sprintf("certificate lifetime (at most %s)", certs.MaxClientTTL))
	renamed(fs, "ttl", flagCertTTL)
	out := fs.String("out", "", "directory to write the credentials to (required)")
	repo := fs.String("repo", "", "repository the client builds (OWNER/NAME): the gateway places sessions by it")
	pwFile := fs.String("password-file", "", "file holding the CA password (default: $WAKEGATE_CA_PASSWORD)")
	caDB := caDBFlag(fs)
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	switch {
	case *dir == "":
		return usageError("certs issue", "--ca-dir is required")
	case *name == "":
		return usageError("certs issue", "--identity is required")
	case *out == "":
		return usageError("certs issue", "--out is required")
	case *ttl < certs.MinTTL || *ttl > certs.MaxClientTTL:
		return usageError("certs issue", "--cert-ttl %s must be between %s and %s", *ttl, certs.MinTTL, certs.MaxClientTTL)
	}
	ca, op, err := openOperator(*dir, *pwFile, *caDB, stderr)
	if err != nil {
		return err
	}
	defer op.Close()
	var sans []string
	if *repo != "" {
		sans = []string{identity.RepoURI(*repo)}
	}
	leaf, err := op.Issue(ctx, certs.Client, *name, sans, *ttl)
	if err != nil {
		return err
	}
	if err := ca.WriteClientCreds(*out, leaf); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "issued %q (serial %s), valid until %s\nwrote %s, %s, %s\n",
		*name, leaf.Cert.SerialNumber, leaf.Cert.NotAfter.UTC().Format(time.RFC3339),
		filepath.Join(*out, certs.ClientCertFile), filepath.Join(*out, certs.ClientKeyFile), filepath.Join(*out, certs.CACertFile))
	return nil
}

func runCertsToken(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs token", "certs token --ca-dir CA --identity NAME [--token-ttl 10m]", `
Prints a single-use token for identity NAME, signed by the CA's clients
provisioner. 'wakegate connect --ca-url URL --ca-fingerprint FP --token T'
exchanges it for a short-lived client certificate, so a CI machine holds no
long-lived secret. The CA refuses a token used twice or past its --token-ttl.
Pass it to CI as a secret: it is a credential until it is used.`, stdout, stderr)
	dir := fs.String(flagCADir, "", "CA directory made by 'certs init' (required)")
	renamed(fs, "dir", flagCADir)
	name := fs.String(flagIdentity, "", "client identity the token is for (required)")
	renamed(fs, "name", flagIdentity)
	ttl := fs.Duration(flagTokenTTL, certs.DefaultTokenTTL, fmt.Sprintf("how long the token may wait to be used (at most %s)", certs.MaxTokenTTL))
	renamed(fs, "ttl", flagTokenTTL)
	repo := fs.String("repo", "", "repository the client builds (OWNER/NAME), carried in its certificate")
	pwFile := fs.String("password-file", "", "file holding the CA password (default: $WAKEGATE_CA_PASSWORD)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	switch {
	case *dir == "":
		return usageError("certs token", "--ca-dir is required")
	case *name == "":
		return usageError("certs token", "--identity is required")
	}
	ca, err := loadCA(*dir, *pwFile)
	if err != nil {
		return err
	}
	noteReencrypted(ca, stderr)
	sans := []string{*name}
	if *repo != "" {
		sans = append(sans, identity.RepoURI(*repo))
	}
	tok, err := ca.Clients.Token(*name, sans, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func runCertsFingerprint(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs fingerprint", "certs fingerprint --ca-dir CA", `
Prints the SHA-256 fingerprint of the CA's root, which clients pass as
--ca-fingerprint to trust the CA's API on first contact.`, stdout, stderr)
	dir := fs.String(flagCADir, "", "CA directory made by 'certs init' (required)")
	renamed(fs, "dir", flagCADir)
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *dir == "" {
		return usageError("certs fingerprint", "--ca-dir is required")
	}
	fp, err := certs.RootFingerprint(*dir)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, fp)
	return nil
}

func runCertsRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs revoke", "certs revoke --ca-dir CA [--reason TEXT] [--kill] (SERIAL... | --identity NAME)", `
Revokes certificates by serial number, or with --identity every valid
certificate of that identity. A serial is given in decimal as 'certs list'
prints it (leading zeros allowed), in hex as 0x..., or as colon-separated
hex bytes as openssl prints it. A serial the CA never issued is refused, and
nothing is revoked unless every serial given is valid. Gateways refuse a
revoked certificate at their next handshake; with --kill a running gateway
also closes the connections it has open, and says how many. Flags go before
the serials.`, stdout, stderr)
	dir := fs.String(flagCADir, "", "CA directory made by 'certs init' (required)")
	renamed(fs, "dir", flagCADir)
	name := fs.String(flagIdentity, "", "revoke every valid certificate of this identity")
	renamed(fs, "name", flagIdentity)
	reason := fs.String("reason", "", "reason recorded with the revocation")
	kill := fs.Bool("kill", false, "also close the revoked certificates' open connections on the running gateway")
	pwFile := fs.String("password-file", "", "file holding the CA password (default: $WAKEGATE_CA_PASSWORD)")
	caDB := caDBFlag(fs)
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	// The flag package stops at the first serial: a flag after it would
	// be read as a serial, and not obeyed.
	for _, a := range fs.Args() {
		if strings.HasPrefix(a, "-") {
			return usageError("certs revoke", "%s: flags go before the serials: wakegate certs revoke [flags] SERIAL...", a)
		}
	}
	var serials []string
	for _, a := range fs.Args() {
		sn, err := certs.ParseSerial(a)
		if err != nil {
			return fmt.Errorf("certs revoke: %w", err)
		}
		if !slices.Contains(serials, sn) {
			serials = append(serials, sn)
		}
	}
	switch {
	case *dir == "":
		return usageError("certs revoke", "--ca-dir is required")
	case (*name == "") == (len(serials) == 0):
		return usageError("certs revoke", "give either serial numbers or --identity")
	}
	_, op, err := openOperator(*dir, *pwFile, *caDB, stderr)
	if err != nil {
		return err
	}
	defer op.Close()
	recs, err := op.Records(ctx)
	if err != nil {
		return err
	}
	byName := map[string]certs.Record{}
	for _, r := range recs {
		byName[r.Serial] = r
	}
	if *name != "" {
		for _, r := range recs {
			if r.Identity == *name && r.Status == "valid" {
				serials = append(serials, r.Serial)
			}
		}
		if len(serials) == 0 {
			return fmt.Errorf("certs revoke: no valid certificate for identity %q", *name)
		}
	}
	// Every serial is checked before any is revoked: a typo in the last
	// must not leave the others half done.
	for _, sn := range serials {
		r, ok := byName[sn]
		switch {
		case !ok:
			return fmt.Errorf("certs revoke: %w with serial %s in this CA; see 'wakegate certs list' (nothing revoked)", certs.ErrUnknownSerial, sn)
		case r.Status == "revoked":
			return fmt.Errorf("certs revoke: %s (%s) is already revoked (nothing revoked)", sn, r.Identity)
		}
	}
	for _, sn := range serials {
		rv, err := op.Revoke(ctx, sn, *reason, *kill)
		if err != nil {
			return err
		}
		id := rv.Identity
		if id == "" {
			id = byName[sn].Identity
		}
		fmt.Fprintf(stdout, "revoked %s (%s)%s\n", rv.Serial, id, killed(rv, *kill))
	}
	return nil
}

// killed says what --kill did.
func killed(rv *certs.Revocation, kill bool) string {
	switch {
	case !kill:
		return ""
	case rv.Gateway == "" && rv.Shared:
		return "; every gateway on the shared database closes its open connections within a few seconds"
	case rv.Gateway == "":
		return "; no gateway is serving this CA, so it had no open connections"
	case rv.Shared && rv.Closed >= 0:
		return fmt.Sprintf("; closed %d open connection(s) at the gateway that revoked it; the other gateways on the shared database close theirs within a few seconds", rv.Closed)
	case rv.Closed < 0:
		return "; the gateway did not say how many open connections it closed"
	case rv.Closed == 1:
		return "; closed 1 open connection"
	}
	return fmt.Sprintf("; closed %d open connections", rv.Closed)
}

// noteReencrypted says which key files loading the CA rewrote from the
// legacy PEM encryption (names only).
func noteReencrypted(ca *certs.CA, stderr io.Writer) {
	for _, f := range ca.Reencrypted {
		fmt.Fprintf(stderr, "re-encrypted %s in %s as PKCS#8 with PBKDF2 (it was in the legacy PEM encryption)\n", f, ca.Dir)
	}
}

func runCertsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs list", "certs list --ca-dir CA [--json]", `
Lists the certificates the CA issued: serial, identity, expiry and status
(valid, expired or revoked), newest expiry first.`, stdout, stderr)
	dir := fs.String(flagCADir, "", "CA directory made by 'certs init' (required)")
	renamed(fs, "dir", flagCADir)
	asJSON := fs.Bool("json", false, "print JSON")
	pwFile := fs.String("password-file", "", "file holding the CA password (default: $WAKEGATE_CA_PASSWORD)")
	caDB := caDBFlag(fs)
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *dir == "" {
		return usageError("certs list", "--ca-dir is required")
	}
	_, op, err := openOperator(*dir, *pwFile, *caDB, stderr)
	if err != nil {
		return err
	}
	defer op.Close()
	recs, err := op.Records(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(recs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERIAL\tIDENTITY\tNOT AFTER\tSTATUS")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Serial, r.Identity, r.NotAfter.UTC().Format(time.RFC3339), r.Status)
	}
	return tw.Flush()
}

func runCertsRotate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs rotate-intermediate", "certs rotate-intermediate --ca-dir CA [--ca-name NAME]", `
Replaces the intermediate CA with a new one signed by the same root, keeping
the old one beside it. Every party trusts the root and every certificate
carries its own intermediate, so certificates issued before stay valid
until they expire; restart the gateway to issue and renew with the new one.
See docs/certificates.md.`, stdout, stderr)
	dir := fs.String(flagCADir, "", "CA directory made by 'certs init' (required)")
	renamed(fs, "dir", flagCADir)
	name := fs.String(flagCAName, "wakegate", "name that prefixes the new intermediate's common name")
	renamed(fs, "name", flagCAName)
	pwFile := fs.String("password-file", "", "file holding the CA password (default: $WAKEGATE_CA_PASSWORD)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *dir == "" {
		return usageError("certs rotate-intermediate", "--ca-dir is required")
	}
	password, err := caPassword(*pwFile)
	if err != nil {
		return err
	}
	ca, err := certs.RotateIntermediate(*dir, *name, password)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "new intermediate %s (serial %s), valid until %s\nrestart the gateway on %s to issue with it\n",
		ca.Intermediate.Subject.CommonName, ca.Intermediate.SerialNumber.Text(16), ca.Intermediate.NotAfter.UTC().Format(time.RFC3339), *dir)
	return nil
}
