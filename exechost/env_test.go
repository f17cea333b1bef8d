package exechost

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Secrets in the gateway's own environment, as an operator sets them.
const (
	envTestPassword    = "ca-pw-5e1d7c0b93"
	envTestFlyToken    = "fly-tok-a4b8c2d6e0"
	envTestParentToken = "parent-tok-19f3e7"
)

// setSecretEnv gives this process the secrets a gateway holds, and a
// harmless variable that children must still inherit.
func setSecretEnv(t *testing.T) {
	t.Setenv("WAKEGATE_CA_PASSWORD", envTestPassword)
	t.Setenv("FLY_API_TOKEN", envTestFlyToken)
	t.Setenv("WAKEGATE_TOKEN", envTestParentToken)
	t.Setenv("WAKEGATE_ENV_TEST_PLAIN", "kept")
}

// checkChildEnv fails unless the environment dump env has none of the
// parent's secrets and still has its ordinary variables.
func checkChildEnv(t *testing.T, who, env string) {
	t.Helper()
	for _, secret := range []string{envTestPassword, envTestFlyToken, envTestParentToken, "WAKEGATE_CA_PASSWORD=", "FLY_API_TOKEN="} {
		if strings.Contains(env, secret) {
			t.Errorf("%s inherited %q:\n%s", who, secret, env)
		}
	}
	if !strings.Contains(env, "WAKEGATE_ENV_TEST_PLAIN=kept\n") {
		t.Errorf("%s lost the rest of the environment:\n%s", who, env)
	}
}

// waitFile waits for a command to finish writing path.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && strings.HasSuffix(string(b), "END\n") {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not written", path)
		}
		time.Sleep(10 * time.Millisecond) // polling a child's file, with a deadline
	}
}

// Not parallel: it sets the process environment.
func TestExecCommandsDoNotInheritTheGatewaysSecrets(t *testing.T) {
	setSecretEnv(t)
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
		env := waitFile(t, filepath.Join(dir, kind+".env"))
		checkChildEnv(t, "the exec "+kind+" command", env)
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
	setSecretEnv(t)
	// The command learns the secrets some other way (a file, its own
	// configuration) and prints them; the wake error quotes what it printed.
	leak := "token=$WAKEGATE_TOKEN password=" + envTestPassword + " fly=" + envTestFlyToken + " parent=" + envTestParentToken
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
			for _, secret := range []string{execTestToken, envTestPassword, envTestFlyToken, envTestParentToken} {
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
