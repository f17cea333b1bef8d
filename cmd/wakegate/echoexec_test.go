package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// echoExec is an exec provider whose engines are 'wakegate engine' in
// front of the echo stand-in for buildkitd (testdata/echoengine): a
// connection proxied to an engine gets every byte it sends echoed back,
// which tests of the data path read without BuildKit.
type echoExec struct {
	// args are the gateway's provider flags; env is what the gateway's
	// environment needs (WAKEGATE_EXEC_ROOT).
	args, env []string
	// root holds each engine's directory: its pid, address and log.
	root string
}

func newEchoExec(t *testing.T) *echoExec {
	t.Helper()
	work := t.TempDir()
	echo := filepath.Join(work, "echoengine")
	if out, err := exec.Command("go", "build", "-o", echo, "./testdata/echoengine").CombinedOutput(); err != nil {
		t.Fatalf("build echoengine: %v\n%s", err, out)
	}
	root, err := os.MkdirTemp("", "wg-echo-") // short: engine sockets live here
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	start := filepath.Join(work, "start.sh")
	script := `set -eu
dir="$WAKEGATE_EXEC_ROOT/$WAKEGATE_ENGINE"
mkdir -p "$dir"
rm -f "$dir/engine.addr"
"$WAKEGATE_BIN" engine --state "$dir" --listen 127.0.0.1:0 --addr-file "$dir/engine.addr" \
  --name "wakegate-$WAKEGATE_ENGINE" --engine-cmd "` + echo + ` {socket}" >>"$dir/engine.log" 2>&1 &
echo $! >"$dir/pid"
while [ ! -s "$dir/engine.addr" ]; do sleep 0.1; done
cat "$dir/engine.addr"
`
	if err := os.WriteFile(start, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	scripts, err := filepath.Abs(filepath.Join("..", "..", "scripts", "exec-local"))
	if err != nil {
		t.Fatal(err)
	}
	return &echoExec{
		args: []string{"--provider", "exec", "--exec-start", "sh " + start,
			"--exec-stop", "sh " + filepath.Join(scripts, "stop.sh"), "--exec-status", "sh " + filepath.Join(scripts, "status.sh")},
		env:  []string{"WAKEGATE_EXEC_ROOT=" + root},
		root: root,
	}
}
