package main

import (
	"strings"
	"testing"
)

// fly init and the gateway's fly flags refuse what Fly would refuse, or
// what cannot work, before any API call.
func TestFlyFlagsFailBeforeAnyAPICall(t *testing.T) {
	t.Setenv("FLY_API_TOKEN", "")
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	base := []string{"fly", "init", "--app", "a", "--region", "ams", "--image", "i"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(base, "--suspend", "--vm-memory", "4096"), "--suspend needs machines of at most 2048 MB"},
		{append(base, "--vm-size", "huge-9x"), "--vm-size"},
		{append(base, "--engine", "podman"), "--engine must be buildkit or dagger"},
		{append(base, "--volume-size", "600"), "--volume-size 1 to 500"},
		{base, "no Fly API token: set FLY_API_TOKEN"},
		{[]string{"gateway", "--ca-dir", "ca", "--provider", "fly", "--fly-app", "a", "--fly-stop-wait", "2m"}, "--fly-stop-wait must be between"},
	} {
		out := newLogWatch()
		err := run(t.Context(), tc.args, out, out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("wakegate %s = %v, want an error containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
