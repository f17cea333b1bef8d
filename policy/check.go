package policy

import (
	"fmt"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// checkRule turns one decoded rule into a Rule and says what is wrong with
// it: each key's problems at the key's line, the rule's at its header's.
func checkRule(v *ruleValues, l *ruleLayout) (Rule, problems) {
	r := Rule{Line: l.at.line}
	var ps problems
	var name, oidc, repo bool // which kinds of key the rule sets, valid or not
	for i := range fields {
		f := &fields[i]
		val := v.get(f.key)
		if val == nil {
			continue
		}
		name = name || !f.oidc
		oidc = oidc || f.oidc
		repo = repo || f.selectsRepo()
		at, ok := l.keys[f.key]
		if !ok {
			at = l.at
		}
		s, ok := val.(string)
		if !ok {
			ps.add(at.line, at.col, "%s must be a string in quotes, e.g. %s = %q", f.key, f.key, f.example)
			continue
		}
		if msg := checkValue(f, s); msg != "" {
			ps.add(at.line, at.col, "%s", msg)
			continue
		}
		*f.rule(&r) = s
	}
	switch {
	case name && oidc:
		ps.add(l.at.line, l.at.col, "name applies to certificates an operator issued, repository/ref/... to OIDC-enrolled jobs: split into two rules")
	case oidc && !repo:
		ps.add(l.at.line, l.at.col, "rule matches any repository on GitHub: add repository or owner")
	case !name && !oidc:
		ps.add(l.at.line, l.at.col, "empty rule: add repository or owner (e.g. repository = %q) for OIDC-enrolled jobs, or name for identities an operator issued", "acme/*")
	}
	return r, ps
}

// checkValue says what is wrong with value s of key f, or "".
func checkValue(f *field, s string) string {
	switch {
	case s == "":
		return fmt.Sprintf("%s is empty, which would match nothing: give a value such as %q, or remove the key to match any", f.key, f.example)
	case !doublestar.ValidatePattern(s):
		return fmt.Sprintf("%s %q is not a valid pattern: close every [ and {, or write a literal *, ?, [, ], {, } or \\ as \\*, \\? and so on", f.key, s)
	}
	// Patterns that are valid but can never match what GitHub sends.
	switch f.key {
	case "repository":
		// Only a '/' (or a '**', or a class or alternative that may hold
		// one) can match the '/' of OWNER/NAME.
		if !strings.ContainsAny(s, "/[{") && !strings.Contains(s, "**") {
			return fmt.Sprintf("repository %q has no '/': it matches OWNER/NAME, e.g. %q; for every repository of an owner, write owner = %q", s, s+"/*", s)
		}
	case "ref":
		if !strings.ContainsAny(s, `*?[{\`) && !strings.HasPrefix(s, "refs/") {
			return fmt.Sprintf("ref %q can never match: GitHub sends the full ref, e.g. %q or %q", s, "refs/heads/"+s, "refs/tags/"+s)
		}
	}
	return ""
}
