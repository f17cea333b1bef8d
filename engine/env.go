package engine

import (
	"cmp"
	"os"
	"slices"
	"strings"
)

// secretEnv names the variables that hold secrets of wakegate or of
// whoever started it: the CA's password (the gateway), a single-use
// enrolment token (an engine's own, or a connect's), the Fly API token (the
// fly provider) and GitHub's OIDC request token (a CI job). No child process
// inherits them: a build step, buildkitd or an operator's exec command has
// no use for them, and anything it prints may reach a client.
var secretEnv = []string{
	"WAKEGATE_CA_PASSWORD",
	"WAKEGATE_TOKEN",
	"FLY_API_TOKEN",
	"FLY_ACCESS_TOKEN",
	"ACTIONS_ID_TOKEN_REQUEST_TOKEN",
}

func isSecretEnv(key string) bool { return slices.Contains(secretEnv, key) }

// childEnv is the environment of every process this package starts: this
// process's own without the secret variables, then extra (KEY=value), later
// entries winning. What a child needs of a secret kind — an engine's own
// token — it gets through extra, explicitly.
func childEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return isSecretEnv(k)
	})
	return append(env, extra...)
}

// scrubber blanks secrets in text that leaves for a client or a log: the
// values of the secret variables of this process's environment and of env
// (KEY=value entries), and tok, an engine's token. It reads the environment
// once, when made.
type scrubber []secret

// secret is a value to blank and what stands in its place.
type secret struct{ value, label string }

func newScrubber(env []string, tok string) scrubber {
	var s scrubber
	add := func(v, label string) {
		if v != "" {
			s = append(s, secret{v, label})
		}
	}
	add(tok, "[token]")
	for _, k := range secretEnv {
		add(os.Getenv(k), "[$"+k+"]")
	}
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); isSecretEnv(k) {
			add(v, "[$"+k+"]")
		}
	}
	// Longest first, so that a secret containing another is blanked whole.
	slices.SortStableFunc(s, func(a, b secret) int { return cmp.Compare(len(b.value), len(a.value)) })
	return s
}

// scrub returns text with every secret replaced by its label.
func (s scrubber) scrub(text string) string {
	for _, x := range s {
		text = strings.ReplaceAll(text, x.value, x.label)
	}
	return text
}
