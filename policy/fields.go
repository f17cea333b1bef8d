package policy

import (
	"strings"

	"github.com/wakegate/wakegate/identity"
)

// field is one key a rule may set: how it is spelled in the file, where it
// lives in a Rule and which claim it is matched against.
type field struct {
	key     string // the TOML key
	oidc    bool   // matched against an OIDC-enrolled job's claims; false: the issued identity's name
	fold    bool   // compared case-insensitively, as GitHub treats it
	label   string // how a refusal names the claim
	example string // a value to show in messages
	rule    func(*Rule) *string
	claim   func(*identity.Claims) string // nil for name
}

// fields in the order refusals list them.
var fields = []field{
	{key: "repository", oidc: true, fold: true, label: "repository", example: "acme/*",
		rule: func(r *Rule) *string { return &r.Repository }, claim: func(c *identity.Claims) string { return c.Repository }},
	{key: "owner", oidc: true, fold: true, label: "owner", example: "acme",
		rule: func(r *Rule) *string { return &r.Owner }, claim: func(c *identity.Claims) string { return c.Owner }},
	{key: "ref", oidc: true, label: "ref", example: "refs/heads/main",
		rule: func(r *Rule) *string { return &r.Ref }, claim: func(c *identity.Claims) string { return c.Ref }},
	{key: "workflow", oidc: true, label: "workflow", example: "CI",
		rule: func(r *Rule) *string { return &r.Workflow }, claim: func(c *identity.Claims) string { return c.Workflow }},
	{key: "event_name", oidc: true, label: "event", example: "push",
		rule: func(r *Rule) *string { return &r.EventName }, claim: func(c *identity.Claims) string { return c.EventName }},
	{key: "environment", oidc: true, fold: true, label: "environment", example: "production",
		rule: func(r *Rule) *string { return &r.Environment }, claim: func(c *identity.Claims) string { return c.Environment }},
	{key: "name", label: "identity", example: "team-*",
		rule: func(r *Rule) *string { return &r.Name }},
}

// selectsRepo reports whether f narrows which repositories a rule admits;
// an OIDC rule needs one, or it admits every repository on GitHub.
func (f *field) selectsRepo() bool { return f.key == "repository" || f.key == "owner" }

// lookupField finds the field spelled key, ignoring case as the decoder
// does; nil when there is none.
func lookupField(key string) *field {
	for i := range fields {
		if strings.EqualFold(fields[i].key, key) {
			return &fields[i]
		}
	}
	return nil
}

// keyList is the rule keys for messages: "repository, owner, …, and name".
func keyList() string {
	s := ""
	for i, f := range fields {
		switch {
		case i == 0:
		case i == len(fields)-1:
			s += " and "
		default:
			s += ", "
		}
		s += f.key
	}
	return s
}
