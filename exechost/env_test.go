package exechost

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/wakegate/wakegate/internal/childenv/childenvtest"
)

// Not parallel: it sets the process environment.
func TestExecCommandsDoNotInheritTheGatewaysSecrets(t *testing.T) {
	childenvtest.SetSecrets(t)
	dir := t.TempDir()
	x := newTestExec(t, dir, Config{
		Start:  `env > "$OUT/start.env"; echo END >> "$OUT/start.env"; echo 127.0.0.1:1234`,
		Stop:   `env > "$OUT/stop.env"; echo END >> "$OUT/stop.env"`,
		Status: `env > "$OUT/status.env"; echo END >> "$OUT/status.env"; echo running`,
	})
	if _, err := x.Start(t.Context(), "engine-0"); err != nil {
		t.Fatal(err)
	}
	if err := x.Stop(t.Context(), "engine-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Status(t.Context(), "engine-0"); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"start", "stop", "status"} {
		env := childenvtest.WaitFile(t, filepath.Join(dir, kind+".env"))
		childenvtest.Check(t, "the exec "+kind+" command", env)
		if !strings.Contains(env, "WAKEGATE_ENGINE=engine-0\n") || !strings.Contains(env, "WAKEGATE_ENGINE_NAME=wakegate-engine-0\n") {
			t.Errorf("the exec %s command did not get WAKEGATE_ENGINE and WAKEGATE_ENGINE_NAME:\n%s", kind, env)
		}
	}
	if env := readFile(t, filepath.Join(dir, "start.env")); !strings.Contains(env, "WAKEGATE_TOKEN="+execTestToken+"\n") {
		t.Errorf("the exec start command did not get its engine's token:\n%s", env)
	}
}

// Not parallel: it sets the process environment.
func TestExecFailureReachesTheClientWithEverySecretBlanked(t *testing.T) {
	childenvtest.SetSecrets(t)
	// The command learns the secrets some other way (a file, its own
	// configuration) and prints them; the wake error quotes what it printed.
	leak := "token=$WAKEGATE_TOKEN password=" + childenvtest.Password + " fly=" + childenvtest.FlyToken + " parent=" + childenvtest.ParentToken
	for _, tc := range []struct{ name, start string }{
		{"on stderr", `echo "` + leak + `" >&2; exit 1`},
		{"as the address", `echo "` + leak + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newTestExec(t, t.TempDir(), Config{Start: tc.start})
			_, err := x.Start(t.Context(), "engine-0")
			if err == nil {
				t.Fatal("Start succeeded, want an error")
			}
			msg := err.Error()
			for _, secret := range []string{execTestToken, childenvtest.Password, childenvtest.FlyToken, childenvtest.ParentToken} {
				if strings.Contains(msg, secret) {
					t.Errorf("wake error has %q: %s", secret, msg)
				}
			}
			if !strings.Contains(msg, "token=[token] password=[$WAKEGATE_CA_PASSWORD] fly=[$FLY_API_TOKEN] parent=[$WAKEGATE_TOKEN]") {
				t.Errorf("wake error %q does not show what was blanked", msg)
			}
		})
	}
}
