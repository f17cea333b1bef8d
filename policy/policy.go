package policy

import (
	"fmt"
	"os"
)

// Policy is a parsed policy file. A nil *Policy is the gateway run without
// --policy: see Allow.
type Policy struct {
	Source string // the file it was read from, named in messages
	Rules  []Rule
}

// Rule is one [[allow]] table. Every field is a doublestar glob; "" leaves
// that key unset, which matches anything. Parse guarantees each rule is
// either for OIDC-enrolled jobs (Repository or Owner set, Name unset) or for
// named identities (Name set alone).
type Rule struct {
	Line int // line of its [[allow]] header

	Repository  string // OWNER/NAME, case-insensitive
	Owner       string // GitHub's repository_owner, case-insensitive
	Ref         string // e.g. refs/heads/main
	Workflow    string // the workflow's name
	Environment string // case-insensitive; a job outside one has ""
	EventName   string // e.g. push, pull_request
	Name        string // an identity from 'certs issue' or 'certs token'
}

// forOIDC reports whether r judges OIDC-enrolled jobs. A rule mixing name
// with OIDC keys, which Parse refuses, judges no one.
func (r *Rule) forOIDC() bool {
	return (r.Repository != "" || r.Owner != "") && r.Name == ""
}

// forName reports whether r judges identities an operator issued.
func (r *Rule) forName() bool {
	if r.Name == "" {
		return false
	}
	for _, f := range fields {
		if f.oidc && *f.rule(r) != "" {
			return false
		}
	}
	return true
}

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return Parse(path, data)
}
