// Package childenvtest is test support for what child processes inherit:
// it gives the test process the secrets a gateway or an engine holds, and
// checks an environment dump written by a child for them. Only tests
// import it. It must not import any other wakegate package.
package childenvtest

import (
	"os"
	"strings"
	"testing"
	"time"
)

// Secrets in the gateway's own environment, as an operator sets them.
const (
	Password    = "ca-pw-5e1d7c0b93"
	FlyToken    = "fly-tok-a4b8c2d6e0"
	ParentToken = "parent-tok-19f3e7"
)

// SetSecrets gives this process the secrets a gateway (or an engine)
// holds, and a harmless variable that children must still inherit. Tests
// that call it must not be parallel.
func SetSecrets(t *testing.T) {
	t.Setenv("WAKEGATE_CA_PASSWORD", Password)
	t.Setenv("FLY_API_TOKEN", FlyToken)
	t.Setenv("WAKEGATE_TOKEN", ParentToken)
	t.Setenv("WAKEGATE_ENV_TEST_PLAIN", "kept")
}

// Check fails unless the environment dump env has none of the parent's
// secrets and still has its ordinary variables.
func Check(t *testing.T, who, env string) {
	t.Helper()
	for _, secret := range []string{Password, FlyToken, ParentToken, "WAKEGATE_CA_PASSWORD=", "FLY_API_TOKEN="} {
		if strings.Contains(env, secret) {
			t.Errorf("%s inherited %q:\n%s", who, secret, env)
		}
	}
	if !strings.Contains(env, "WAKEGATE_ENV_TEST_PLAIN=kept\n") {
		t.Errorf("%s lost the rest of the environment:\n%s", who, env)
	}
}

// WaitFile waits for a child to finish writing path (its last line END).
func WaitFile(t *testing.T, path string) string {
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
