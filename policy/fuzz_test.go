package policy

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/wakegate/wakegate/identity"
)

// FuzzParse: a policy file is operator input the gateway reads at start and
// on every change; no file may crash it, and every line Parse names must be
// in the file.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := bytes.Count(data, []byte("\n")) + 1
		p, err := Parse("fuzz.toml", data)
		if err != nil {
			var ps *Problems
			if !errors.As(err, &ps) || len(ps.List) == 0 {
				t.Fatalf("Parse error %v (%T) is not a list of problems", err, err)
			}
			for _, pr := range ps.List {
				if pr.Line < 0 || pr.Line > lines {
					t.Fatalf("problem at line %d of a %d-line file: %s", pr.Line, lines, pr.Msg)
				}
			}
			return
		}
		if len(p.Rules) == 0 {
			t.Fatal("Parse accepted a file with no rules")
		}
		for _, r := range p.Rules {
			if r.Line < 1 || r.Line > lines {
				t.Fatalf("rule at line %d of a %d-line file: %+v", r.Line, lines, r)
			}
			if r.forOIDC() == r.forName() {
				t.Fatalf("Parse accepted a rule for neither or both kinds of peer: %+v", r)
			}
			for _, f := range fields {
				if v := *f.rule(&r); v != "" && !doublestar.ValidatePattern(v) {
					t.Fatalf("Parse accepted %s %q, not a valid pattern", f.key, v)
				}
			}
		}
	})
}

// FuzzAllow: a rule that spells out a job's claims exactly, whatever
// characters they hold, admits that job and no other repository; a rule
// naming an identity admits it and never a job.
func FuzzAllow(f *testing.F) {
	f.Fuzz(func(t *testing.T, repo, owner, ref, workflow, environment, event, name string) {
		if repo == "" {
			return // every enrolled job has a repository
		}
		c := identity.Claims{Repository: repo, Owner: owner, Ref: ref, Workflow: workflow, Environment: environment, EventName: event}
		p := &Policy{Rules: []Rule{{Repository: literal(repo), Owner: literal(owner), Ref: literal(ref),
			Workflow: literal(workflow), Environment: literal(environment), EventName: literal(event)}}}
		if err := p.AllowClaims(c); err != nil {
			t.Fatalf("a rule of the exact claims %+v refused them: %v", c, err)
		}
		other := c
		other.Repository = repo + "-other"
		if err := p.AllowClaims(other); err == nil {
			t.Fatalf("a rule for repository %q admitted %q", repo, other.Repository)
		}
		if name == "" {
			return
		}
		named := &Policy{Rules: []Rule{{Name: literal(name)}}}
		if err := named.Allow(identity.Peer{Name: name}); err != nil {
			t.Fatalf("a rule naming %q refused it: %v", name, err)
		}
		if err := named.Allow(identity.Peer{Name: name, OIDC: &c}); err == nil {
			t.Fatalf("a rule naming %q admitted a job with that common name", name)
		}
	})
}

// literal is a glob that matches s and nothing else.
func literal(s string) string {
	var b strings.Builder
	for i := range len(s) { // by byte: the metacharacters are ASCII, and s need not be UTF-8
		if strings.IndexByte(`\*?[]{}`, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
