package policy

import (
	"slices"

	"github.com/wakegate/wakegate/identity"
)

// QueuedJob is what GitHub's workflow_job webhook says about a job before
// it runs, as far as a rule can judge it.
type QueuedJob struct {
	Repository string // repository.full_name, OWNER/NAME
	Owner      string // repository.owner.login
	Workflow   string // workflow_job.workflow_name; "" if the payload has none
}

// AllowQueued is nil when the job j could be let in once it connects: some
// rule for OIDC-enrolled jobs matches its repository and owner and, when
// the rule sets workflow and the payload names one, its workflow. Else it
// is ErrNoPolicy (p nil) or a *Refusal.
//
// The other keys (ref, event_name, environment) are not judged: a queued
// job's payload has no ref or event (its head_branch is not the ref a pull
// request's job runs on, refs/pull/N/merge) and no environment yet. So a
// job allowed here may still be refused when it connects: a pre-wake
// decided by AllowQueued can cost an engine's grace period, never access.
func (p *Policy) AllowQueued(j QueuedJob) error {
	c := &identity.Claims{Repository: j.Repository, Owner: j.Owner, Workflow: j.Workflow}
	if p == nil {
		return ErrNoPolicy
	}
	var failed []string
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.forOIDC() {
			continue
		}
		if (r.Repository != "" && !match(r.Repository, j.Repository, true)) || (r.Owner != "" && !match(r.Owner, j.Owner, true)) {
			continue // not this rule's repository
		}
		if r.Workflow != "" && j.Workflow != "" && !match(r.Workflow, j.Workflow, false) {
			if !slices.Contains(failed, "workflow") {
				failed = append(failed, "workflow")
			}
			continue
		}
		return nil
	}
	return &Refusal{Peer: identity.Peer{OIDC: c}, Failed: failed}
}
