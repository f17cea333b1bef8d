package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// newFlags makes a flag set whose help goes to stdout when asked for (-h)
// and to stderr on a mistake.
func newFlags(name, synopsis, about string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage:\n  wakegate %s\n\n%s\n\nFlags:\n", synopsis, strings.TrimSpace(about))
		fs.PrintDefaults()
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
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	return nil
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
	l, err := parseLogLevel(level)
	if err != nil {
		return nil, err
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
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
