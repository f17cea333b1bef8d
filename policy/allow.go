package policy

import (
	"errors"
	"slices"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/wakegate/wakegate/identity"
)

// ErrNoPolicy refuses an OIDC-enrolled job when the gateway runs without a
// policy: with no rules to judge its claims by, any repository on GitHub
// could connect.
var ErrNoPolicy = errors.New("no policy: OIDC enrolment is off")

// Refusal is a peer no rule allows.
type Refusal struct {
	Peer identity.Peer
	// Failed are the keys (ref, workflow, event_name, environment) that
	// refused an OIDC-enrolled job in the rules that allow its repository;
	// empty when no rule allows the repository at all.
	Failed []string
}

func (e *Refusal) Error() string {
	c := e.Peer.OIDC
	if c == nil {
		return "identity " + e.Peer.Name + " is not allowed by the gateway's policy"
	}
	msg := "repository " + c.Repository + " is not allowed by the gateway's policy"
	if len(e.Failed) == 0 {
		return msg
	}
	var why []string
	for _, f := range fields {
		for _, k := range e.Failed {
			if k == f.key && f.claim != nil {
				v := f.claim(c)
				if v == "" {
					v = "none"
				}
				why = append(why, f.label+" "+v)
			}
		}
	}
	return msg + " (" + strings.Join(why, ", ") + ")"
}

// Allow is nil when p allows peer, else why not: ErrNoPolicy or a
// *Refusal. A job enrolled with OIDC is judged only by the rules for OIDC
// jobs, an identity an operator issued only by the rules naming identities,
// so a job's common name can never pass for an issued identity. Within a
// rule every key set must match; any one rule suffices.
//
// A nil p is the gateway without --policy: issued identities are allowed,
// as the CA vouches for them, and OIDC-enrolled jobs are refused.
func (p *Policy) Allow(peer identity.Peer) error {
	if peer.OIDC != nil {
		return p.allowOIDC(peer)
	}
	if p == nil {
		return nil
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.forName() && match(r.Name, peer.Name, false) {
			return nil
		}
	}
	return &Refusal{Peer: peer}
}

// AllowClaims is Allow for a job with claims c.
func (p *Policy) AllowClaims(c identity.Claims) error {
	return p.Allow(identity.Peer{OIDC: &c})
}

func (p *Policy) allowOIDC(peer identity.Peer) error {
	if p == nil {
		return ErrNoPolicy
	}
	var failed []string
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.forOIDC() {
			continue
		}
		repoOK, missed := true, []string(nil)
		for _, f := range fields {
			pat := *f.rule(r)
			switch {
			case !f.oidc || pat == "" || match(pat, f.claim(peer.OIDC), f.fold):
			case f.selectsRepo():
				repoOK = false
			default:
				missed = append(missed, f.key)
			}
		}
		if !repoOK {
			continue // not this rule's repository: it has nothing to say
		}
		if len(missed) == 0 {
			return nil
		}
		for _, k := range missed {
			if !slices.Contains(failed, k) {
				failed = append(failed, k)
			}
		}
	}
	return &Refusal{Peer: peer, Failed: failed}
}

// match reports whether value matches the glob pattern, ignoring case when
// fold. A bad pattern, which Parse refuses, matches nothing.
func match(pattern, value string, fold bool) bool {
	if fold {
		pattern, value = strings.ToLower(pattern), strings.ToLower(value)
	}
	ok, err := doublestar.Match(pattern, value)
	return ok && err == nil
}
