package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// newFlags makes a flag set whose help goes to stdout when asked for (-h)
// and to stderr on a mistake.
func newFlags(name, synopsis, about string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage:\n  wakegate %s\n\n%s\n\nFlags:\n", synopsis, strings.TrimSpace(about))
		printVisibleDefaults(fs, w)
	}
	return fs
}

// parse parses args; -h prints help to stdout and returns errHelp.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout)
			fs.Usage()
			return errHelp
		}
	}
	// The flag package would print its error and then the whole usage; one
	// line that names the flag, the value and an example says more.
	out := fs.Output()
	usage := fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	if err != nil {
		fmt.Fprintln(out, flagErrorLine(fs, err))
		return errUsage
	}
	return nil
}

// flagErrorLine is the one line that reports a flag the command refused:
// what was wrong, an example of a good value, and where the help is.
func flagErrorLine(fs *flag.FlagSet, err error) string {
	cmd := fs.Name()
	help := cmd
	if fields := strings.Fields(cmd); len(fields) > 0 {
		help = fields[0]
	}
	see := fmt.Sprintf("; see 'wakegate help %s'", help)
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Sprintf("wakegate %s: unknown flag --%s%s", cmd, name, see)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Sprintf("wakegate %s: flag --%s needs a value (e.g. --%s %s)%s", cmd, name, name, flagExample(fs.Lookup(name)), see)
	}
	// invalid value "V" for flag -NAME: REASON
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		if q, after, ok := strings.Cut(rest, " for flag -"); ok {
			if name, reason, ok := strings.Cut(after, ": "); ok {
				f := fs.Lookup(name)
				value, uerr := strconv.Unquote(q)
				if uerr == nil {
					reason = flagValueReason(f, value, reason)
				}
				return fmt.Sprintf("wakegate %s: invalid value %s for --%s: %s (e.g. --%s %s)%s", cmd, q, name, reason, name, flagExample(f), see)
			}
		}
	}
	return fmt.Sprintf("wakegate %s: %s%s", cmd, msg, see)
}

// flagKind names the kind of value a flag takes: bool, int, duration,
// string, or value for a flag with its own parser.
func flagKind(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return "value"
	}
	switch g.Get().(type) {
	case bool:
		return "bool"
	case int, int64, uint, uint64:
		return "int"
	case time.Duration:
		return "duration"
	case string:
		return "string"
	case float64:
		return "float"
	}
	return "value"
}

// flagValueReason says why value is not one the flag takes: the flag
// package reports numbers and durations as a bare "parse error".
func flagValueReason(f *flag.Flag, value, reason string) string {
	if f == nil || reason != "parse error" {
		return reason
	}
	switch flagKind(f) {
	case "duration":
		if _, err := time.ParseDuration(value); err != nil {
			return err.Error()
		}
	case "int":
		return "not a whole number"
	case "bool":
		return "want true or false"
	}
	return reason
}

// flagExample is a value the flag takes: its default when it has a
// telling one, else one of its kind.
func flagExample(f *flag.Flag) string {
	if f == nil {
		return "VALUE"
	}
	kind := flagKind(f)
	if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "0s" && kind != "bool" {
		return f.DefValue
	}
	switch kind {
	case "bool":
		return "true"
	case "int":
		return "4"
	case "duration":
		return "30s"
	}
	return "VALUE"
}

// errHelp means help was printed on request: not a failure.
var errHelp = errors.New("help printed")

// helpOK turns errHelp into success.
func helpOK(err error) error {
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	return newFormatLogger(w, level, "text")
}

// newFormatLogger is newLogger with a --log-format: text (key=value) or
// json (one JSON object a line).
func newFormatLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	l, err := parseLogLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, checkLogFormat(format)
}

// logFormatVar defines --log-format, shared by the commands that serve.
func logFormatVar(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "log-format", "text", "log lines as text (key=value) or json (one object a line)")
}

// checkLogFormat judges a --log-format with a command's other flags.
func checkLogFormat(format string) error {
	if format != "text" && format != "json" {
		return fmt.Errorf("--log-format %q: want text or json", format)
	}
	return nil
}

// parseLogLevel reads a --log-level, so that a command can judge it with
// its other flags.
func parseLogLevel(level string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return l, nil
}

// usageError reports a flag mistake in the command's terms.
func usageError(cmd, format string, args ...any) error {
	return fmt.Errorf("%s: %s (see 'wakegate help %s')", cmd, fmt.Sprintf(format, args...), strings.Fields(cmd)[0])
}

// subcommand is one verb of a command group such as 'certs' or 'fly'.
type subcommand struct {
	name string
	run  func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// dispatch runs the subcommand args[0] of group, or prints usage: to
// stdout when asked for, to stderr (with errUsage) on a mistake.
func dispatch(ctx context.Context, group string, subs []subcommand, usage func(io.Writer), args []string, stdout, stderr io.Writer) error {
	sub := ""
	if len(args) > 0 {
		sub = args[0]
	}
	for _, s := range subs {
		if s.name == sub {
			return helpOK(s.run(ctx, args[1:], stdout, stderr))
		}
	}
	switch sub {
	case "-h", "--help", "-help", "help":
		usage(stdout)
		return nil
	case "":
	default:
		fmt.Fprintf(stderr, "wakegate %s: unknown subcommand %q\n\n", group, sub)
	}
	usage(stderr)
	return errUsage
}
