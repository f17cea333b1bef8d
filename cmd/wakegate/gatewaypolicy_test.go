package main

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wakegate/wakegate/identity"
)

func TestGatewayRefusesJobsOfAnIssuerItNoLongerTrusts(t *testing.T) {
	pol := filepath.Join(t.TempDir(), "policy.toml")
	rewritePolicy(t, pol, acmePolicy)
	p, err := loadPolicy(pol, "https://ghes.example.com/_services/token", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	job := identity.Claims{Issuer: "https://token.actions.githubusercontent.com", Repository: "acme/app", Owner: "acme", Ref: "refs/heads/main"}
	err = p.allow(identity.Peer{Name: "github:acme/app", OIDC: &job})
	if err == nil || !strings.Contains(err.Error(), "this gateway trusts only https://ghes.example.com/_services/token") {
		t.Fatalf("a job of another issuer = %v, want refused", err)
	}
	job.Issuer = "https://ghes.example.com/_services/token"
	if err := p.allow(identity.Peer{Name: "github:acme/app", OIDC: &job}); err != nil {
		t.Fatalf("a job of the trusted issuer the policy allows = %v", err)
	}
}
