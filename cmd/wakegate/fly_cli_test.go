package main

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wakegate/wakegate/fly/flytest"
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

// TestFlyStatusSaysWhenThePoolHasNoMachines: a wrong --app or --pool is
// an error naming both, not an empty table and exit 0.
func TestFlyStatusSaysWhenThePoolHasNoMachines(t *testing.T) {
	em := flytest.New(flytest.Options{Dir: t.TempDir()})
	api := httptest.NewServer(em)
	t.Cleanup(func() { api.Close(); em.Close() })
	t.Setenv("FLY_FLAPS_BASE_URL", api.URL)
	t.Setenv("FLY_API_TOKEN", "emulator-token")
	mustRun(t, "fly", "init", "--app", "ci-engines", "--region", "ams", "--engines", "1", "--volume-size", "1", "--image", "wakegate-engine")

	var out strings.Builder
	if err := run(t.Context(), []string{"fly", "status", "--app", "ci-engines"}, &out, &out); err != nil {
		t.Fatalf("fly status of the pool: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "wakegate-engine-0") {
		t.Fatalf("fly status listed:\n%s", out.String())
	}
	for _, args := range [][]string{
		{"fly", "status", "--app", "ci-engnies"},
		{"fly", "status", "--app", "ci-engines", "--pool", "other"},
		{"fly", "status", "--app", "ci-engines", "--pool", "other", "--json"},
	} {
		out.Reset()
		err := run(t.Context(), args, &out, &out)
		if err == nil || !strings.Contains(err.Error(), "has no machines in pool") || !strings.Contains(err.Error(), "check --app and --pool") {
			t.Errorf("wakegate %s = %v, want an error saying the pool has no machines", strings.Join(args, " "), err)
		}
	}
}
