package childenv

import (
	"cmp"
	"os"
	"slices"
	"strings"
)

// Secrets names the variables that hold secrets of wakegate or of whoever
// started it: the CA's password (the gateway), a single-use enrolment
// token (an engine's own, or a connect's), the Fly API token (the fly
// provider) and GitHub's OIDC request token (a CI job). No child process
// inherits them: a build step, buildkitd or an operator's exec command has
// no use for them, and anything it prints may reach a client.
var Secrets = []string{
	"WAKEGATE_CA_PASSWORD",
	"WAKEGATE_TOKEN",
	"FLY_API_TOKEN",
	"FLY_ACCESS_TOKEN",
	"ACTIONS_ID_TOKEN_REQUEST_TOKEN",
}

// IsSecret says whether the variable key holds a secret.
func IsSecret(key string) bool { return slices.Contains(Secrets, key) }

// Env is the environment of a child process: this process's own without
// the secret variables, then extra (KEY=value), later entries winning.
// What a child needs of a secret kind — an engine's own token — it gets
// through extra, explicitly.
func Env(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return IsSecret(k)
	})
	return append(env, extra...)
}

// Scrubber blanks secrets in text that leaves for a client or a log.
type Scrubber []secret

// secret is a value to blank and what stands in its place.
type secret struct{ value, label string }

// NewScrubber blanks the values of the secret variables of this process's
// environment and of env (KEY=value entries), and tok, a child's own
// token. It reads the environment once, now.
func NewScrubber(env []string, tok string) Scrubber {
	var s Scrubber
	add := func(v, label string) {
		if v != "" {
			s = append(s, secret{v, label})
		}
	}
	add(tok, "[token]")
	for _, k := range Secrets {
		add(os.Getenv(k), "[$"+k+"]")
	}
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); IsSecret(k) {
			add(v, "[$"+k+"]")
		}
	}
	// Longest first, so that a secret containing another is blanked whole.
	slices.SortStableFunc(s, func(a, b secret) int { return cmp.Compare(len(b.value), len(a.value)) })
	return s
}

// Scrub returns text with every secret replaced by its label.
func (s Scrubber) Scrub(text string) string {
	for _, x := range s {
		text = strings.ReplaceAll(text, x.value, x.label)
	}
	return text
}
