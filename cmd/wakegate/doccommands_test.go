package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// docCommand is one 'wakegate ...' command line found in the docs.
type docCommand struct {
	where string   // file:line
	args  []string // after "wakegate"
	// bare is inline code without "wakegate" (`certs issue --identity N`):
	// it may be another tool's (`fly ssh console`), so a subcommand that
	// does not exist is not an error.
	bare bool
}

// wakegateCall finds "wakegate" used as a command: at a line's start, after
// a space, a slash ($BIN/wakegate) or a backtick, followed by its arguments.
var wakegateCall = regexp.MustCompile("(?:^|[\\s/`(])wakegate\\s+([a-z][^`|;&#)]*)")

// docCommands are the wakegate command lines of a Markdown file: in code
// blocks (with shell line continuations joined) and in inline code.
func docCommands(t *testing.T, path string) []docCommand {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []docCommand
	lines := strings.Split(string(b), "\n")
	inBlock := false
	for i := 0; i < len(lines); i++ {
		line, at := lines[i], i+1
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inBlock = !inBlock
			continue
		}
		var spans []string
		if inBlock || strings.HasPrefix(line, "    ") {
			for strings.HasSuffix(strings.TrimSpace(line), "\\") && i+1 < len(lines) {
				i++
				line = strings.TrimSuffix(strings.TrimSpace(line), "\\") + " " + strings.TrimSpace(lines[i])
			}
			spans = []string{line}
		} else {
			parts := strings.Split(line, "`")
			for j := 1; j < len(parts); j += 2 {
				spans = append(spans, parts[j])
			}
		}
		for _, s := range spans {
			where := filepath.Base(path) + ":" + strconv.Itoa(at)
			ms := wakegateCall.FindAllStringSubmatch(s, -1)
			for _, m := range ms {
				if args := strings.Fields(m[1]); len(args) > 0 {
					out = append(out, docCommand{where: where, args: args})
				}
			}
			// Inline code that names a command without "wakegate":
			// `certs issue --identity NAME`, `gateway --cert-ttl 10s`.
			if args := strings.Fields(s); len(ms) == 0 && !inBlock && len(args) > 1 && strings.Contains(s, " --") {
				if _, ok := commandNamed(args[0]); ok {
					out = append(out, docCommand{where: where, args: args, bare: true})
				}
			}
		}
	}
	return out
}

// helpFlags is the set of flags 'wakegate CMD... -h' lists, and whether the
// command exists.
func helpFlags(t *testing.T, cmd []string) (map[string]bool, bool) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), append(append([]string(nil), cmd...), "-h"), &stdout, &stderr); err != nil {
		return nil, false
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(stdout.String(), -1) {
		flags[m[1]] = true
	}
	return flags, true
}

// TestDocCommandsUseFlagsThatExist: every 'wakegate ...' command line in
// README.md and docs/*.md names a command that exists and only flags its
// help lists (so an old, hidden spelling fails here too).
func TestDocCommandsUseFlagsThatExist(t *testing.T) {
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../README.md")
	withSub := map[string]bool{"certs": true, "fly": true, "config": true, "dev": true, "policy": true, "envoy": true}
	cache := map[string]map[string]bool{}
	checked := 0
	for _, f := range files {
		for _, c := range docCommands(t, f) {
			cmd := []string{c.args[0]}
			if cmd[0] == "help" || strings.HasPrefix(cmd[0], "-") {
				continue
			}
			if _, ok := commandNamed(cmd[0]); !ok {
				continue // prose: "wakegate runs …"
			}
			rest := c.args[1:]
			if withSub[cmd[0]] && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
				cmd, rest = append(cmd, rest[0]), rest[1:]
			}
			key := strings.Join(cmd, " ")
			flags, ok := cache[key]
			if !ok {
				var exists bool
				if flags, exists = helpFlags(t, cmd); !exists && !c.bare {
					t.Errorf("%s: wakegate %s: no such command", c.where, key)
				}
				cache[key] = flags
			}
			if flags == nil {
				continue
			}
			for _, a := range rest {
				if a == "--" {
					break
				}
				name, ok := strings.CutPrefix(a, "--")
				if !ok || name == "" || strings.ContainsAny(name[:1], "….") {
					continue
				}
				name, _, _ = strings.Cut(name, "=")
				name = strings.TrimRight(name, ",.:")
				checked++
				if !flags[name] {
					t.Errorf("%s: wakegate %s has no flag --%s (in: wakegate %s)", c.where, key, name, strings.Join(c.args, " "))
				}
			}
		}
	}
	if checked < 50 {
		t.Fatalf("only %d flags found in the docs: the extraction is broken", checked)
	}
}

// commandNamed is the top-level command called name.
func commandNamed(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// TestREADMEStatesTheCodesCredentialLifetimes: the README's table of
// lifetimes says what certs/ defines.
func TestREADMEStatesTheCodesCredentialLifetimes(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	human := func(d time.Duration) string {
		switch {
		case d%time.Hour == 0:
			return strconv.Itoa(int(d/time.Hour)) + " h"
		case d%time.Minute == 0:
			return strconv.Itoa(int(d/time.Minute)) + " min"
		}
		return strconv.Itoa(int(d/time.Second)) + " s"
	}
	for _, want := range []string{
		"| client certificate (`connect`, `certs issue`, OIDC enrolment) | " + human(certs.DefaultClientTTL) + " by default, at most " + human(certs.MaxClientTTL) + ";",
		"| single-use enrolment token (`certs token`) | " + human(certs.DefaultTokenTTL) + " by default, at most " + human(certs.MaxTokenTTL) + ";",
		"| gateway's and engines' certificates | " + human(certs.ServerTTL) + ";",
		"No certificate is shorter than " + human(certs.MinTTL) + ".",
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("README.md does not say %q", want)
		}
	}
}
