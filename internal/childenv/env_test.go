package childenv

import (
	"slices"
	"strings"
	"testing"
)

// Not parallel: it sets the process environment.
func TestEnvDropsEverySecretAndKeepsTheRest(t *testing.T) {
	for _, k := range Secrets {
		t.Setenv(k, "secret-of-"+k)
	}
	t.Setenv("WAKEGATE_CHILDENV_PLAIN", "kept")
	env := Env("WAKEGATE_TOKEN=the-childs-own")
	for _, kv := range env {
		if strings.Contains(kv, "secret-of-") {
			t.Errorf("the child inherited %q", kv)
		}
	}
	if !slices.Contains(env, "WAKEGATE_CHILDENV_PLAIN=kept") {
		t.Errorf("the child lost the rest of the environment")
	}
	if env[len(env)-1] != "WAKEGATE_TOKEN=the-childs-own" {
		t.Errorf("the child's own token is not last (winning): %q", env[len(env)-1])
	}
}

// Not parallel: it sets the process environment.
func TestScrubberBlanksTheTokenTheEnvironmentsAndTheLongestFirst(t *testing.T) {
	t.Setenv("WAKEGATE_CA_PASSWORD", "pw-123")
	t.Setenv("FLY_API_TOKEN", "pw-123-and-more")
	s := NewScrubber([]string{"WAKEGATE_TOKEN=given-tok", "PLAIN=not-a-secret"}, "own-tok")
	got := s.Scrub("own-tok given-tok pw-123 pw-123-and-more not-a-secret")
	want := "[token] [$WAKEGATE_TOKEN] [$WAKEGATE_CA_PASSWORD] [$FLY_API_TOKEN] not-a-secret"
	if got != want {
		t.Fatalf("Scrub = %q, want %q", got, want)
	}
}
