package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/internal/childenv/childenvtest"
)

// Not parallel: it sets the process environment.
func TestBuildkitdDoesNotInheritTheGatewaysSecrets(t *testing.T) {
	childenvtest.SetSecrets(t)
	dir := shortDir(t)
	out := filepath.Join(dir, "child.env")
	b := &Buildkitd{Cmd: []string{"/bin/sh", "-c", "env > " + out + "; echo END >> " + out}, Dir: dir}
	p, err := b.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background()) })
	childenvtest.Check(t, "the engine process", childenvtest.WaitFile(t, out))
}

// Not parallel: it sets the process environment.
func TestLocalEngineGetsItsOwnTokenAndNoOtherSecret(t *testing.T) {
	childenvtest.SetSecrets(t)
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
	env := childenvtest.WaitFile(t, filepath.Join(dir, "engine-0", "child.env"))
	childenvtest.Check(t, "the local engine", env)
	if !strings.Contains(env, "WAKEGATE_TOKEN=engine-tok-engine-0\n") {
		t.Errorf("the local engine did not get its own token:\n%s", env)
	}
}
