package engine

import (
	"context"
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

// setSecretEnv gives this process the secrets a gateway (or an engine)
// holds, and a harmless variable that children must still inherit.
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

// waitFile waits for a child to finish writing path.
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
func TestBuildkitdDoesNotInheritTheGatewaysSecrets(t *testing.T) {
	setSecretEnv(t)
	dir := shortDir(t)
	out := filepath.Join(dir, "child.env")
	b := &Buildkitd{Cmd: []string{"/bin/sh", "-c", "env > " + out + "; echo END >> " + out}, Dir: dir}
	p, err := b.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background()) })
	checkChildEnv(t, "the engine process", waitFile(t, out))
}

// Not parallel: it sets the process environment.
func TestLocalEngineGetsItsOwnTokenAndNoOtherSecret(t *testing.T) {
	setSecretEnv(t)
	dir := shortDir(t)
	// A stand-in for 'wakegate engine': it writes its environment and exits.
	bin := filepath.Join(dir, "wakegate")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nenv > \"$3/child.env\"; echo END >> \"$3/child.env\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(LocalConfig{Dir: dir, N: 1, Wakegate: bin, Buildkitd: "buildkitd",
		Token: func(id string) (string, error) { return "engine-tok-" + id, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := l.Start(ctx, "engine-0"); err == nil {
		t.Fatal("Start succeeded with an engine that exits at once")
	}
	env := waitFile(t, filepath.Join(dir, "engine-0", "child.env"))
	checkChildEnv(t, "the local engine", env)
	if !strings.Contains(env, "WAKEGATE_TOKEN=engine-tok-engine-0\n") {
		t.Errorf("the local engine did not get its own token:\n%s", env)
	}
}
