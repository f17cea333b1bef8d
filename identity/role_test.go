package identity

import (
	"strings"
	"testing"
)

func TestRoleIsReadFromTheRoleSANOnly(t *testing.T) {
	for _, tc := range []struct {
		name string
		uris []string
		want string
	}{
		{"the gateway role", []string{RoleURI(RoleGateway)}, RoleGateway},
		{"beside a repository", []string{RepoURI("acme/app"), "wakegate://role/gateway"}, RoleGateway},
		{"no SAN", nil, ""},
		{"a repository named like a role", []string{RepoURI("role/gateway")}, ""},
		{"an empty role", []string{RoleURIPrefix}, ""},
	} {
		if got := Role(certWith(GatewayName, tc.uris...)); got != tc.want {
			t.Errorf("%s: Role = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestWakegateNamesAreReserved(t *testing.T) {
	for name, want := range map[string]bool{
		GatewayName: true, "wakegate-engine-0": true, "team-a": false, "github:acme/app": false, "my-wakegate-x": false,
	} {
		if got := Reserved(name); got != want {
			t.Errorf("Reserved(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestEngineNameIsTheSameForEveryHostsIDs(t *testing.T) {
	for id, want := range map[string]string{
		"engine-0":       "wakegate-engine-0",
		"engine-12":      "wakegate-engine-12",
		"148e271c0d9e89": "wakegate-engine-148e271c0d9e89",
		"0":              "wakegate-engine-0",
	} {
		got := EngineName(id)
		if got != want {
			t.Errorf("EngineName(%q) = %q, want %q", id, got, want)
		}
		if !Reserved(got) || !strings.HasPrefix(got, EngineNamePrefix) {
			t.Errorf("EngineName(%q) = %q is not a reserved engine name", id, got)
		}
	}
}
