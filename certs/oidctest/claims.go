package oidctest

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"go.step.sm/crypto/jose"
)

// DefaultAudience is the aud Token sets when a Claims has none.
const DefaultAudience = "wakegate"

// TokenLifetime is how long a token lives when a Claims has no expiry:
// GitHub's ID tokens live minutes.
const TokenLifetime = 5 * time.Minute

// Claims is the claim set of a GitHub Actions ID token. GitHub sends every
// claim as a string, numbers included, and aud as a single string (so does
// Audience when it holds one value). Token fills the registered claims
// (iss, aud, jti, iat, nbf, exp) where they are zero.
type Claims struct {
	Issuer    string            `json:"iss,omitempty"`
	Audience  jose.Audience     `json:"aud,omitempty"`
	Subject   string            `json:"sub,omitempty"`
	JTI       string            `json:"jti,omitempty"`
	IssuedAt  *jose.NumericDate `json:"iat,omitempty"`
	NotBefore *jose.NumericDate `json:"nbf,omitempty"`
	Expiry    *jose.NumericDate `json:"exp,omitempty"`

	Repository           string `json:"repository"`
	RepositoryID         string `json:"repository_id"`
	RepositoryOwner      string `json:"repository_owner"`
	RepositoryOwnerID    string `json:"repository_owner_id"`
	RepositoryVisibility string `json:"repository_visibility"`
	Ref                  string `json:"ref"`
	RefType              string `json:"ref_type"`
	SHA                  string `json:"sha"`
	Workflow             string `json:"workflow"`
	WorkflowRef          string `json:"workflow_ref"`
	JobWorkflowRef       string `json:"job_workflow_ref"`
	Environment          string `json:"environment,omitempty"`
	EventName            string `json:"event_name"`
	Actor                string `json:"actor"`
	ActorID              string `json:"actor_id"`
	RunID                string `json:"run_id"`
	RunNumber            string `json:"run_number"`
	RunAttempt           string `json:"run_attempt"`
	RunnerEnvironment    string `json:"runner_environment"`
}

// GitHubClaims is what a push to main of repo ("OWNER/NAME") running
// workflow "CI" (.github/workflows/ci.yml) on a GitHub-hosted runner
// would carry. IDs and the commit are derived from repo, so they are the
// same in every run. Registered claims are left zero for Token to fill.
func GitHubClaims(repo string) Claims {
	owner, name, ok := strings.Cut(repo, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		panic("oidctest: GitHubClaims wants OWNER/NAME, got " + strconv.Quote(repo))
	}
	const ref = "refs/heads/main"
	workflowRef := repo + "/.github/workflows/ci.yml@" + ref
	sum := sha1.Sum([]byte(repo))
	ownerSum := sha1.Sum([]byte(owner))
	return Claims{
		Subject:              "repo:" + repo + ":ref:" + ref,
		Repository:           repo,
		RepositoryID:         idFrom(sum[:], 1e9),
		RepositoryOwner:      owner,
		RepositoryOwnerID:    idFrom(ownerSum[:], 1e8),
		RepositoryVisibility: "private",
		Ref:                  ref,
		RefType:              "branch",
		SHA:                  hex.EncodeToString(sum[:]),
		Workflow:             "CI",
		WorkflowRef:          workflowRef,
		JobWorkflowRef:       workflowRef,
		EventName:            "push",
		Actor:                owner,
		ActorID:              idFrom(ownerSum[:], 1e8),
		RunID:                idFrom(sum[4:], 1e10),
		RunNumber:            "1",
		RunAttempt:           "1",
		RunnerEnvironment:    "github-hosted",
	}
}

// idFrom is a decimal ID of GitHub's size (at least floor) derived from b.
func idFrom(b []byte, floor uint64) string {
	return strconv.FormatUint(floor+binary.BigEndian.Uint64(b)%(9*floor), 10)
}

// defaultAudience is what GitHub puts in aud when the job asks for no
// audience.
func (c Claims) defaultAudience() string {
	owner := c.RepositoryOwner
	if owner == "" {
		owner, _, _ = strings.Cut(c.Repository, "/")
	}
	return "https://github.com/" + owner
}

// filled is c with the registered claims set where zero: iss, aud
// DefaultAudience, a random jti, iat now, nbf iat, exp iat+TokenLifetime.
// Basing nbf and exp on iat makes a token issued long ago an expired one.
func (c Claims) filled(issuer string) Claims {
	if c.Issuer == "" {
		c.Issuer = issuer
	}
	if len(c.Audience) == 0 {
		c.Audience = jose.Audience{DefaultAudience}
	}
	if c.JTI == "" {
		c.JTI = uuid()
	}
	if c.IssuedAt == nil {
		c.IssuedAt = jose.NewNumericDate(time.Now())
	}
	if c.NotBefore == nil {
		nbf := *c.IssuedAt
		c.NotBefore = &nbf
	}
	if c.Expiry == nil {
		c.Expiry = jose.NewNumericDate(c.IssuedAt.Time().Add(TokenLifetime))
	}
	return c
}
