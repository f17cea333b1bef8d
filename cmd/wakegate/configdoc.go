package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// configDoc renders docs/configuration.md from the gateway's flag set, so
// that the page lists exactly the keys the gateway reads
// (TestConfigurationDocIsCurrent keeps the committed page so).
func configDoc() string {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var g gatewayFlags
	g.define(fs)
	var b strings.Builder
	b.WriteString(`# Configuration

<!-- Generated from the gateway's flags by cmd/wakegate/configdoc.go; do not edit.
     Regenerate: go test ./cmd/wakegate -run TestConfigurationDocIsCurrent -update -->

Every option of ` + "`wakegate gateway`" + ` can be set in three ways, which fill the same
flags:

1. a TOML file, ` + "`wakegate gateway --config wakegate.toml`" + ` (or ` + "`$WAKEGATE_CONFIG`" + `),
   whose keys are the flag names below;
2. an environment variable named after the flag: ` + "`WAKEGATE_`" + ` and the name in upper
   case with ` + "`_`" + ` for ` + "`-`" + ` (` + "`--ca-dir`" + ` is ` + "`WAKEGATE_CA_DIR`" + `); an empty
   variable is ignored;
3. the flag on the command line.

A later one overrides an earlier one: defaults < file < environment < command line.
Every value goes through the flag's own parser, wherever it comes from.

The file is flat: no tables, one key per flag. Durations are strings (` + "`\"30s\"`" + `,
` + "`\"5m\"`" + `), counts integers, switches booleans. An unknown key, a value of the wrong
type or a value the flag refuses is an error naming its line, and the gateway
does not start. Check a file with ` + "`wakegate config check FILE`" + `.

` + "```toml" + `
ca-dir   = "/var/lib/wakegate/ca"
state    = "/var/lib/wakegate/state"
listen   = "0.0.0.0:8443"
engines  = 4
idle     = "5m"
policy   = "/etc/wakegate/policy.toml"
` + "```" + `

No key holds a secret: the CA password and the webhook secret are read from the
files ` + "`password-file`" + ` and ` + "`github-webhook-secret-file`" + ` name (or
` + "`$WAKEGATE_CA_PASSWORD`" + `). The Fly API token comes only from ` + "`$FLY_API_TOKEN`" + `.
`)
	for _, f := range configKeys(fs) {
		if !envReserved[f.Name] {
			continue
		}
		name := f.Name
		fmt.Fprintf(&b, "`%s` has no variable: `%s` already names an engine to the exec\nprovider's commands.\n", name, envName(name))
	}
	b.WriteString(`
## Keys

| Key | Variable | Type | Default | Meaning |
|-----|----------|------|---------|---------|
`)
	for _, f := range configKeys(fs) {
		env := "`" + envName(f.Name) + "`"
		if envReserved[f.Name] {
			env = "—"
		}
		def := "—"
		if f.DefValue != "" {
			def = "`" + f.DefValue + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", f.Name, env, docType(f), def, strings.ReplaceAll(f.Usage, "|", `\|`))
	}
	return b.String()
}

// docType names a key's TOML type in the table.
func docType(f *flag.Flag) string {
	switch flagKind(f) {
	case "bool":
		return "boolean"
	case "int":
		return "integer"
	case "duration":
		return "duration (string)"
	case "string":
		return "string"
	}
	return "string or integer"
}
