package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/wakegate/wakegate/identity"
)

func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Parse("policy.toml", []byte(src))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	return p
}

// job is the claims of a push to main of repo by workflow CI, outside any
// environment.
func job(repo string) identity.Claims {
	owner, _, _ := strings.Cut(repo, "/")
	return identity.Claims{Issuer: "https://token.actions.githubusercontent.com", Repository: repo, Owner: owner,
		Ref: "refs/heads/main", Workflow: "CI", EventName: "push"}
}

func with(c identity.Claims, edit func(*identity.Claims)) identity.Claims {
	edit(&c)
	return c
}

func TestAllowMatchesClaims(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy string
		claims identity.Claims
		allow  bool
	}{
		{"exact repository", `[[allow]]
repository = "acme/app"`, job("acme/app"), true},
		{"other repository", `[[allow]]
repository = "acme/app"`, job("acme/lib"), false},
		{"star matches a name", `[[allow]]
repository = "acme/*"`, job("acme/lib"), true},
		{"star does not cross a slash", `[[allow]]
repository = "acme/*"`, job("acme/lib/x"), false},
		{"star does not match another owner", `[[allow]]
repository = "acme/*"`, job("acme-evil/lib"), false},
		{"repository ignores case", `[[allow]]
repository = "Acme/App"`, job("acme/APP"), true},
		{"owner alone", `[[allow]]
owner = "acme"`, job("ACME/anything"), true},
		{"owner of another", `[[allow]]
owner = "acme"`, job("acmecorp/app"), false},
		{"star does not cross a slash in ref", `[[allow]]
repository = "acme/*"
ref = "refs/heads/*"`, with(job("acme/app"), func(c *identity.Claims) { c.Ref = "refs/heads/feature/x" }), false},
		{"double star crosses slashes", `[[allow]]
repository = "acme/*"
ref = "refs/heads/**"`, with(job("acme/app"), func(c *identity.Claims) { c.Ref = "refs/heads/feature/x" }), true},
		{"alternatives", `[[allow]]
repository = "acme/*"
ref = "refs/{heads/main,tags/v*}"`, with(job("acme/app"), func(c *identity.Claims) { c.Ref = "refs/tags/v1.2" }), true},
		{"ref is case-sensitive", `[[allow]]
repository = "acme/*"
ref = "refs/heads/main"`, with(job("acme/app"), func(c *identity.Claims) { c.Ref = "refs/heads/Main" }), false},
		{"workflow is case-sensitive", `[[allow]]
repository = "acme/*"
workflow = "ci"`, job("acme/app"), false},
		{"event_name is case-sensitive", `[[allow]]
repository = "acme/*"
event_name = "Push"`, job("acme/app"), false},
		{"environment ignores case", `[[allow]]
repository = "acme/*"
environment = "production"`, with(job("acme/app"), func(c *identity.Claims) { c.Environment = "Production" }), true},
		{"star matches a job outside any environment", `[[allow]]
repository = "acme/*"
environment = "*"`, job("acme/app"), true},
		{"a job outside an environment fails a named environment", `[[allow]]
repository = "acme/*"
environment = "prod"`, job("acme/app"), false},
		{"every key must match", `[[allow]]
repository = "acme/app"
ref = "refs/heads/main"
workflow = "CI"
event_name = "push"`, with(job("acme/app"), func(c *identity.Claims) { c.EventName = "pull_request" }), false},
		{"every key matching", `[[allow]]
repository = "acme/app"
owner = "acme"
ref = "refs/heads/main"
workflow = "CI"
event_name = "push"`, job("acme/app"), true},
		{"any rule suffices", `[[allow]]
repository = "acme/app"
ref = "refs/tags/*"
[[allow]]
repository = "acme/app"
event_name = "push"`, job("acme/app"), true},
		{"a name rule never admits a job", `[[allow]]
name = "**"`, job("acme/app"), false},
		{"a name rule matching the job's common name does not admit it", `[[allow]]
name = "github:acme/app"`, job("acme/app"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustParse(t, tc.policy)
			err := p.AllowClaims(tc.claims)
			if (err == nil) != tc.allow {
				t.Fatalf("AllowClaims(%+v) = %v, want allowed %v", tc.claims, err, tc.allow)
			}
			var r *Refusal
			if err != nil && !errors.As(err, &r) {
				t.Fatalf("refusal %v is not a *Refusal", err)
			}
		})
	}
}

func TestAllowJudgesPeersByTheirKind(t *testing.T) {
	p := mustParse(t, `
[[allow]]
repository = "acme/*"

[[allow]]
name = "team-*"
`)
	claims := job("acme/app")
	for _, tc := range []struct {
		name  string
		peer  identity.Peer
		allow bool
	}{
		{"issued identity matching a name rule", identity.Peer{Name: "team-a"}, true},
		{"names are case-sensitive", identity.Peer{Name: "Team-a"}, false},
		{"star does not cross a slash in a name", identity.Peer{Name: "team-a/b"}, false},
		{"issued identity matching no name rule", identity.Peer{Name: "ops"}, false},
		{"issued identity carrying an allowed repository", identity.Peer{Name: "ops", Repo: "acme/app"}, false},
		{"issued identity named like a repository", identity.Peer{Name: "acme/app"}, false},
		{"job of an allowed repository", identity.Peer{Name: "github:acme/app", Repo: "acme/app", OIDC: &claims}, true},
		{"job whose common name matches a name rule", identity.Peer{Name: "team-a", OIDC: new(job("evil/app"))}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := p.Allow(tc.peer); (err == nil) != tc.allow {
				t.Fatalf("Allow(%+v) = %v, want allowed %v", tc.peer, err, tc.allow)
			}
		})
	}
}

func TestNoPolicyRefusesJobsAndAllowsIssuedIdentities(t *testing.T) {
	var p *Policy
	if err := p.Allow(identity.Peer{Name: "team-a"}); err != nil {
		t.Errorf("without a policy an issued identity was refused: %v", err)
	}
	c := job("acme/app")
	err := p.Allow(identity.Peer{Name: "github:acme/app", OIDC: &c})
	if !errors.Is(err, ErrNoPolicy) || err.Error() != "no policy: OIDC enrolment is off" {
		t.Errorf("without a policy a job got %v, want ErrNoPolicy", err)
	}
	if err := p.AllowClaims(c); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("AllowClaims without a policy = %v, want ErrNoPolicy", err)
	}
}

func TestRefusalsSayWhatFailed(t *testing.T) {
	p := mustParse(t, `
[[allow]]
repository = "acme/app"
ref = "refs/heads/main"
workflow = "Release"

[[allow]]
owner = "acme"
event_name = "push"
environment = "production"

[[allow]]
name = "team-a"
`)
	for _, tc := range []struct {
		name string
		peer identity.Peer
		want string
	}{
		{"repository no rule names", identity.Peer{OIDC: new(job("evil/app"))},
			"repository evil/app is not allowed by the gateway's policy"},
		{"keys that failed in the rules naming the repository", identity.Peer{OIDC: new(with(job("acme/app"), func(c *identity.Claims) {
			c.Ref, c.Workflow, c.EventName = "refs/heads/dev", "CI", "pull_request"
		}))}, "repository acme/app is not allowed by the gateway's policy (ref refs/heads/dev, workflow CI, event pull_request, environment none)"},
		{"only the keys that failed", identity.Peer{OIDC: new(with(job("acme/lib"), func(c *identity.Claims) { c.Environment = "staging" }))},
			"repository acme/lib is not allowed by the gateway's policy (environment staging)"},
		{"issued identity", identity.Peer{Name: "team-b"}, "identity team-b is not allowed by the gateway's policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Allow(tc.peer)
			var r *Refusal
			if !errors.As(err, &r) || err.Error() != tc.want {
				t.Fatalf("Allow = %v\nwant   %s", err, tc.want)
			}
			if r.Peer.Name != tc.peer.Name || r.Peer.OIDC != tc.peer.OIDC {
				t.Errorf("the refusal carries peer %+v, want %+v", r.Peer, tc.peer)
			}
		})
	}
}

func TestRulesMixingKindsAdmitNoOne(t *testing.T) {
	// Parse refuses such a rule; one built by hand must not widen access.
	p := &Policy{Rules: []Rule{{Repository: "acme/*", Name: "team-a"}}}
	if err := p.AllowClaims(job("acme/app")); err == nil {
		t.Error("a mixed rule admitted a job")
	}
	if err := p.Allow(identity.Peer{Name: "team-a"}); err == nil {
		t.Error("a mixed rule admitted an issued identity")
	}
}
