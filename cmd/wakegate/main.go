// Command wakegate runs remote BuildKit engines with zero idle cost: an mTLS
// gateway that wakes engines on demand, the localhost sidecar CI steps use,
// and the certificate authority behind both. See 'wakegate help'.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/wakegate/wakegate/engine"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(int(ee))
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "wakegate:", err)
		os.Exit(1)
	}
}

// exitError carries a child command's exit status out of run.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// errUsage means the usage was already printed.
var errUsage = errors.New("usage")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"certs", "manage the certificate authority and client credentials", runCerts},
		{"policy", "check a policy file of who may connect", runPolicy},
		{"gateway", "run the mTLS gateway that wakes engines on demand", runGateway},
		{"status", "show a running gateway's engines, sessions and certificates", runStatus},
		{"config", "check a gateway configuration file", runConfig},
		{"connect", "run the localhost sidecar a CI step talks to", runConnect},
		{"envoy", "Envoy in place of connect or the engine front: bootstraps, xDS, certificates", runEnvoy},
		{"engine", "run an engine machine: BuildKit behind mTLS, idle self-stop, clean shutdown", runEngine},
		{"fly", "create and inspect the engine pool on Fly Machines", runFly},
		{"simulate", "replay a CI trace against the pool's real logic and compare policies", runSimulate},
		{"dev", "developer tools: a local Fly Machines API emulator", runDev},
		{"version", "print the version and the revision it was built from", runVersion},
		{"help", "show help for a command", runHelp},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errUsage
	}
	switch args[0] {
	case "-h", "--help", "-help":
		usage(stdout)
		return nil
	case "--version", "-version":
		return runVersion(ctx, nil, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	// Hidden: the init of a Dagger engine's namespaces, which 'wakegate
	// engine' re-executes this binary as; not for people.
	if args[0] == engine.NSInitCommand {
		return runEngineNS(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "wakegate: unknown command %q\n\n", args[0])
	usage(stderr)
	return errUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `wakegate runs remote BuildKit and Dagger engines with zero idle cost.

Usage:
  wakegate <command> [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'wakegate help <command>' (or 'wakegate <command> -h') for its flags.

A typical setup (the CA password comes from $WAKEGATE_CA_PASSWORD):
  wakegate certs init  --ca-dir ca
  wakegate gateway     --ca-dir ca --state state
  wakegate certs issue --ca-dir ca --identity ci --out creds
  wakegate connect     --gateway localhost:8443 --creds creds -- buildctl build ...

In GitHub Actions, with no stored secret (the gateway runs with --policy FILE,
see 'wakegate help policy'; the job has 'permissions: id-token: write'):
  wakegate connect --oidc github --gateway HOST:8443 --ca-url https://HOST:9443 \
    --ca-fingerprint FP --background --pid-file "$RUNNER_TEMP/wakegate.pid"
or the action at the repository's root (docs/github-actions.md).

See README.md and docs/ for the certificate model, GitHub Actions, the
security model, the engine machine, Fly Machines, Envoy and the simulator.
`)
}

func runHelp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] && c.name != "help" {
			return c.run(ctx, append(args[1:], "-h"), stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "wakegate help: unknown command %q\n", args[0])
	return errUsage
}
