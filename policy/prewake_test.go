package policy

import (
	"errors"
	"testing"

	"github.com/wakegate/wakegate/identity"
)

func queued(repo, workflow string) QueuedJob {
	c := job(repo)
	return QueuedJob{Repository: repo, Owner: c.Owner, Workflow: workflow}
}

func TestAllowQueuedJudgesWhatThePayloadSays(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy string
		job    QueuedJob
		allow  bool
		why    string // the refusal's words
	}{
		{"repository allowed", `[[allow]]
repository = "acme/*"`, queued("acme/app", "CI"), true, ""},
		{"repository ignores case", `[[allow]]
repository = "Acme/App"`, queued("acme/APP", "CI"), true, ""},
		{"other repository", `[[allow]]
repository = "acme/*"`, queued("evil/app", "CI"), false, "repository evil/app is not allowed by the gateway's policy"},
		{"owner rule", `[[allow]]
owner = "acme"`, queued("acme/app", "CI"), true, ""},
		{"owner rule, another owner", `[[allow]]
owner = "acme"`, queued("acmecorp/app", "CI"), false, "repository acmecorp/app is not allowed by the gateway's policy"},
		{"ref, event and environment are not judged", `[[allow]]
repository = "acme/app"
ref = "refs/tags/*"
event_name = "release"
environment = "production"`, queued("acme/app", "CI"), true, ""},
		{"workflow judged when the payload names it", `[[allow]]
repository = "acme/app"
workflow = "Release"`, queued("acme/app", "CI"), false, "repository acme/app is not allowed by the gateway's policy (workflow CI)"},
		{"workflow matching", `[[allow]]
repository = "acme/app"
workflow = "Rel*"`, queued("acme/app", "Release"), true, ""},
		{"workflow unknown: could match", `[[allow]]
repository = "acme/app"
workflow = "Release"`, queued("acme/app", ""), true, ""},
		{"another rule's workflow", `[[allow]]
repository = "acme/app"
workflow = "Release"
[[allow]]
repository = "acme/*"
workflow = "CI"`, queued("acme/app", "CI"), true, ""},
		{"name rules admit no job", `[[allow]]
name = "**"`, queued("acme/app", "CI"), false, "repository acme/app is not allowed by the gateway's policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := mustParse(t, tc.policy).AllowQueued(tc.job)
			if (err == nil) != tc.allow {
				t.Fatalf("AllowQueued(%+v) = %v, want allowed %v", tc.job, err, tc.allow)
			}
			var r *Refusal
			if err != nil && (!errors.As(err, &r) || err.Error() != tc.why) {
				t.Fatalf("refusal %q (%T), want *Refusal %q", err, err, tc.why)
			}
		})
	}
	var none *Policy
	if err := none.AllowQueued(queued("acme/app", "CI")); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("without a policy: %v, want ErrNoPolicy", err)
	}
}

// TestAJobAllowedToConnectIsAllowedAPrewake: AllowQueued never refuses a
// job that Allow would let in, whatever its ref, event and environment:
// else the webhook would leave cold the very jobs that connect.
func TestAJobAllowedToConnectIsAllowedAPrewake(t *testing.T) {
	policies := []string{
		`[[allow]]
repository = "acme/*"
ref = "refs/heads/main"`,
		`[[allow]]
owner = "acme"
workflow = "CI"
event_name = "push"`,
		`[[allow]]
repository = "acme/app"
environment = "prod*"
[[allow]]
repository = "acme/lib"
workflow = "{CI,Release}"`,
	}
	var claims []identity.Claims
	for _, repo := range []string{"acme/app", "acme/lib", "ACME/App", "evil/app"} {
		for _, ref := range []string{"refs/heads/main", "refs/pull/7/merge", "refs/tags/v1"} {
			for _, wf := range []string{"CI", "Release", "Docs"} {
				for _, ev := range []string{"push", "pull_request"} {
					for _, env := range []string{"", "production"} {
						c := job(repo)
						c.Ref, c.Workflow, c.EventName, c.Environment = ref, wf, ev, env
						claims = append(claims, c)
					}
				}
			}
		}
	}
	allowed := 0
	for _, src := range policies {
		p := mustParse(t, src)
		for _, c := range claims {
			if p.AllowClaims(c) != nil {
				continue
			}
			allowed++
			if err := p.AllowQueued(QueuedJob{Repository: c.Repository, Owner: c.Owner, Workflow: c.Workflow}); err != nil {
				t.Errorf("policy\n%s\nlets %+v connect but refuses its pre-wake: %v", src, c, err)
			}
		}
	}
	if allowed < 20 {
		t.Fatalf("only %d allowed jobs: the table tests too little", allowed)
	}
}
