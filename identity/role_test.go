package identity

import "testing"

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
