package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/wakegate/wakegate/policy"
)

func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "policy", []subcommand{{"check", runPolicyCheck}}, policyUsage, args, stdout, stderr)
}

// policyFormat is the policy file's documentation, shown by 'help policy'
// and 'policy check -h'.
const policyFormat = `A policy file says who may connect to the gateway ('wakegate gateway
--policy FILE'). It is TOML: a list of [[allow]] rules, and nothing else.
Default deny: a client no rule allows is refused, at enrolment and at
every connection.

  # CI jobs that enrolled with their GitHub Actions OIDC token.
  [[allow]]
  repository = "acme/*"          # OWNER/NAME
  ref = "refs/heads/*"           # branches, not tags or pull requests

  [[allow]]
  owner = "acme"                 # every repository of acme...
  event_name = "push"            # ...on push,
  environment = "production"     # ...in this environment

  # Identities an operator issued: 'certs issue --name', 'certs token --name'.
  [[allow]]
  name = "team-*"

A rule for OIDC-enrolled jobs sets repository or owner (without them it
would admit every repository on GitHub), and may narrow it with ref,
workflow, environment and event_name: the claims of GitHub's token of the
same names (owner is repository_owner). A rule for issued identities sets
name alone; a job is never judged by name rules, nor an issued identity by
repository rules. Within a rule every key must match; any one rule admits.

Every value is a glob: * matches within one /-separated part, ** across
parts, ? one character, [abc] and {x,y} as in a shell, \ escapes.
repository, owner and environment ignore case, as GitHub does; ref,
workflow, event_name and name do not. A job outside an environment has
none: environment = "prod" refuses it.

Without --policy the gateway admits every identity an operator issued and
refuses every OIDC-enrolled job ("no policy: OIDC enrolment is off").
The gateway re-reads the file when it changes; a file with problems is
refused and the previous policy stays in force.`

func policyUsage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  wakegate policy <subcommand> [flags]

Subcommands:
  check   report every problem in a policy file, or how many rules it has

`+policyFormat+`
`)
}

func runPolicyCheck(_ context.Context, args []string, stdout, stderr io.Writer) error {
	const about = `Reads the policy file FILE as the gateway would and prints its rules'
count, or every problem with the line to fix, failing when there is one.

` + policyFormat
	fs := newFlags("policy check", "policy check FILE", about, stdout, stderr)
	fs.Usage = func() { // no flags: no empty "Flags:" section
		fmt.Fprintf(fs.Output(), "Usage:\n  wakegate policy check FILE\n\n%s\n", about)
	}
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("policy check", "want one FILE, got %d arguments", fs.NArg())
	}
	file := fs.Arg(0)
	p, err := policy.Load(file)
	var ps *policy.Problems
	if errors.As(err, &ps) {
		fmt.Fprintln(stdout, ps.Error())
		return fmt.Errorf("%s: %d %s", file, len(ps.List), plural(len(ps.List), "problem"))
	}
	if err != nil {
		return err
	}
	named := 0
	for _, r := range p.Rules {
		if r.Name != "" {
			named++
		}
	}
	fmt.Fprintf(stdout, "%s: %d %s (%d for OIDC-enrolled jobs, %d for named identities)\n",
		file, len(p.Rules), plural(len(p.Rules), "rule"), len(p.Rules)-named, named)
	return nil
}

// plural is noun for n of them.
func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}
