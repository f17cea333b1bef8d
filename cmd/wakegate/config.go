package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// The gateway's configuration file is its flag set written as TOML: each
// key is a flag's name, each value what the flag would be given. The flag
// set is the one definition: the file's keys, their types, the WAKEGATE_*
// variables and docs/configuration.md all come from it, and every value
// passes through the flag's own parser.

// configFlagName is the flag that names the file; it is not a key in it.
const configFlagName = "config"

// envPrefix starts the variable that sets a gateway flag:
// WAKEGATE_CA_DIR for --ca-dir.
const envPrefix = "WAKEGATE_"

// envReserved are flags no variable sets, because their variable already
// means something else: the exec provider gives its commands
// WAKEGATE_ENGINE, the engine's id.
var envReserved = map[string]bool{"engine": true}

// envName is the variable that sets flag name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// configKeys are the flags a configuration file may set, sorted by name.
func configKeys(fs *flag.FlagSet) []*flag.Flag {
	var keys []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != configFlagName {
			keys = append(keys, f)
		}
	})
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	return keys
}

// configProblem is one thing wrong in a configuration file, at a line
// (0 when it has none).
type configProblem struct {
	line     int
	key, msg string
}

// configProblems is every problem of one file.
type configProblems struct {
	source string
	list   []configProblem
}

func (ps *configProblems) add(line int, key, format string, args ...any) {
	ps.list = append(ps.list, configProblem{line: line, key: key, msg: fmt.Sprintf(format, args...)})
}

// Error is one "FILE:LINE: key: problem" line per problem.
func (ps *configProblems) Error() string {
	lines := make([]string, 0, len(ps.list))
	for _, p := range ps.list {
		where := ps.source
		if p.line > 0 {
			where += ":" + strconv.Itoa(p.line)
		}
		if p.key != "" {
			where += ": " + p.key
		}
		lines = append(lines, where+": "+p.msg)
	}
	return strings.Join(lines, "\n")
}

func (ps *configProblems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	return ps
}

// applyConfigFile sets, from the TOML document data, every flag of fs
// that keep allows. Every key is judged even when it is not applied, so
// that a mistake never hides behind a command-line flag. The error is a
// *configProblems.
func applyConfigFile(fs *flag.FlagSet, source string, data []byte, keep func(name string) bool) error {
	ps := &configProblems{source: source}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			ps.add(line, strings.Join(de.Key(), "."), "not valid TOML: %s", strings.TrimPrefix(de.Error(), "toml: "))
		} else {
			ps.add(0, "", "not valid TOML: %v", err)
		}
		return ps.err()
	}
	// The decoded document has the values; the parser has their lines.
	p := unstable.Parser{}
	p.Reset(data)
	inTable := false
	for p.NextExpression() {
		e := p.Expression()
		it := e.Key()
		var parts []string
		line := 0
		for it.Next() {
			n := it.Node()
			if line == 0 {
				line = p.Shape(n.Raw).Start.Line
			}
			parts = append(parts, string(n.Data))
		}
		key := strings.Join(parts, ".")
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			inTable = true
			ps.add(line, key, "tables are not used: every key is a gateway flag's name at the top of the file")
			continue
		case unstable.KeyValue:
		default:
			continue
		}
		if inTable {
			continue // reported with its table
		}
		if len(parts) != 1 {
			ps.add(line, key, "dotted keys are not used: write the flag's name, e.g. ca-dir = \"ca\"")
			continue
		}
		f := fs.Lookup(key)
		if f == nil || key == configFlagName {
			ps.add(line, key, "unknown key: keys are the gateway's flag names (docs/configuration.md)")
			continue
		}
		value, ok := configValue(f, doc[key])
		if !ok {
			ps.add(line, key, "want %s, not %s", configType(f), tomlTypeName(doc[key]))
			continue
		}
		if keep(key) {
			if err := fs.Set(key, value); err != nil {
				ps.add(line, key, "invalid value %q: %s (e.g. %s = %s)", value, flagValueReason(f, value, err.Error()), key, configExample(f))
			}
		} else if err := checkFlagValue(f, value); err != nil {
			ps.add(line, key, "invalid value %q: %s (e.g. %s = %s)", value, err, key, configExample(f))
		}
	}
	if err := p.Error(); err != nil && len(ps.list) == 0 {
		ps.add(0, "", "not valid TOML: %v", err)
	}
	return ps.err()
}

// checkFlagValue judges value with a throwaway flag set of f's kind, for a
// key the command line overrides.
func checkFlagValue(f *flag.Flag, value string) error {
	// Only the kinds flag.FlagSet defines can be copied; a flag with its
	// own parser is judged when it is applied.
	scratch := flag.NewFlagSet("check", flag.ContinueOnError)
	scratch.SetOutput(io.Discard)
	switch flagKind(f) {
	case "bool":
		scratch.Bool("v", false, "")
	case "int":
		scratch.Int("v", 0, "")
	case "duration":
		scratch.Duration("v", 0, "")
	default:
		return nil
	}
	if err := scratch.Set("v", value); err != nil {
		return errors.New(flagValueReason(f, value, err.Error()))
	}
	return nil
}

// configValue is v as the string flag f parses, if v is of a TOML type f
// takes: booleans for switches, integers for counts, strings for the rest
// (a duration is a string such as "30s"); a flag with its own parser takes
// a string or an integer.
func configValue(f *flag.Flag, v any) (string, bool) {
	switch flagKind(f) {
	case "bool":
		b, ok := v.(bool)
		return strconv.FormatBool(b), ok
	case "int":
		n, ok := v.(int64)
		return strconv.FormatInt(n, 10), ok
	case "duration", "string":
		s, ok := v.(string)
		return s, ok
	}
	switch v := v.(type) {
	case string:
		return v, true
	case int64:
		return strconv.FormatInt(v, 10), true
	}
	return "", false
}

// configType names the TOML type a flag's key takes.
func configType(f *flag.Flag) string {
	switch flagKind(f) {
	case "bool":
		return "a boolean"
	case "int":
		return "an integer"
	case "duration":
		return `a duration string such as "30s"`
	case "string":
		return "a string"
	}
	return "a string or an integer"
}

// configExample is a TOML value the key takes.
func configExample(f *flag.Flag) string {
	switch ex := flagExample(f); flagKind(f) {
	case "bool", "int":
		return ex
	default:
		return strconv.Quote(ex)
	}
}

func tomlTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}

// applyConfig fills the gateway's flags that the command line left alone:
// first from the file (when there is one), then from WAKEGATE_* variables,
// so that defaults < file < environment < command line.
func applyConfig(fs *flag.FlagSet, file string, getenv func(string) string) error {
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	var fromEnv []*flag.Flag
	for _, f := range configKeys(fs) {
		if !explicit[f.Name] && !envReserved[f.Name] && getenv(envName(f.Name)) != "" {
			fromEnv = append(fromEnv, f)
		}
	}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if err := applyConfigFile(fs, file, data, func(name string) bool { return !explicit[name] }); err != nil {
			return err
		}
	}
	for _, f := range fromEnv {
		v := getenv(envName(f.Name))
		if err := fs.Set(f.Name, v); err != nil {
			return fmt.Errorf("$%s: invalid value %q for --%s: %s (e.g. %s=%s)", envName(f.Name), v, f.Name,
				flagValueReason(f, v, err.Error()), envName(f.Name), flagExample(f))
		}
	}
	return nil
}

func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "config", []subcommand{{"check", runConfigCheck}}, configUsage, args, stdout, stderr)
}

const configAbout = `The gateway's configuration file ('wakegate gateway --config FILE') is
TOML: each key is one of the gateway's flag names and takes what the flag
would, for example:

  ca-dir   = "/var/lib/wakegate/ca"
  state    = "/var/lib/wakegate/state"
  listen   = "0.0.0.0:8443"
  engines  = 4
  idle     = "5m"
  fly-suspend = true

Durations are strings ("30s", "5m"), counts integers, switches booleans.
There are no tables; an unknown key is an error. A WAKEGATE_* variable
named after a flag (WAKEGATE_CA_DIR for ca-dir) overrides the file, and a
flag on the command line overrides both. Secrets are never values: the CA
password and the webhook secret are read from the files password-file and
github-webhook-secret-file name. Every key: docs/configuration.md.`

func configUsage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  wakegate config <subcommand>

Subcommands:
  check   report every problem in a gateway configuration file, with its line

`+configAbout+`
`)
}

func runConfigCheck(_ context.Context, args []string, stdout, stderr io.Writer) error {
	const about = `Reads the gateway configuration file FILE and prints "FILE: ok", or
every problem as FILE:LINE: key: problem, failing when there is one. It
judges each key and value; whether the whole configuration makes a gateway
(--ca-dir given, a provider's own flags) is judged when the gateway starts.

` + configAbout
	fs := newFlags("config check", "config check FILE", about, stdout, stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage:\n  wakegate config check FILE\n\n%s\n", about)
	}
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("config check", "want one FILE, got %d arguments", fs.NArg())
	}
	file := fs.Arg(0)
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	gfs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	gfs.SetOutput(io.Discard)
	var g gatewayFlags
	g.define(gfs)
	err = applyConfigFile(gfs, file, data, func(string) bool { return true })
	var ps *configProblems
	if errors.As(err, &ps) {
		fmt.Fprintln(stdout, ps.Error())
		return fmt.Errorf("%s: %d %s", file, len(ps.list), plural(len(ps.list), "problem"))
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", file)
	return nil
}
