package flytest

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fly "github.com/superfly/fly-go"
)

// script is a machine's process for EngineRunner tests: it notes its pid
// and token in the volume at start, ends when asked to through the volume
// (exit), and on SIGTERM drains until the volume holds "drained".
const script = `dir=$1
echo "$$ $WAKEGATE_TOKEN" >> "$dir/starts"
trap 'while [ ! -e "$dir/drained" ]; do sleep 0.05; done; exit 0' TERM
while [ ! -e "$dir/exit" ]; do sleep 0.05; done`

// shWorld runs machines as /bin/sh processes through EngineRunner.
func shWorld(t *testing.T, opts Options) (*world, string, string) {
	t.Helper()
	opts.Runner = &EngineRunner{Bin: "/bin/sh"}
	w := newEmulator(t, opts)
	size := 1
	resp := do(t, w.srv, "POST", "/volumes", "", fly.CreateVolumeRequest{Name: "cache", Region: "ams", SizeGb: &size})
	var v fly.Volume
	json.NewDecoder(resp.Body).Decode(&v)
	kill := &fly.Duration{Duration: 10 * time.Second}
	resp = do(t, w.srv, "POST", "/machines", "", fly.LaunchMachineInput{SkipLaunch: true, Region: "ams", Config: &fly.MachineConfig{
		Image: "x", Env: map[string]string{"WAKEGATE_TOKEN": "first"},
		Init:       fly.MachineInit{Cmd: []string{"-c", script, "machine", "/data"}},
		Mounts:     []fly.MachineMount{{Volume: v.ID, Path: "/data"}},
		StopConfig: &fly.StopConfig{Timeout: kill}}})
	var m fly.Machine
	json.NewDecoder(resp.Body).Decode(&m)
	if m.ID == "" {
		t.Fatalf("create: %d", resp.StatusCode)
	}
	return w, m.ID, w.em.volumeDir(v.ID)
}

// starts lists the processes the machine has run: "pid token" each.
func starts(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "starts"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Fields(strings.ReplaceAll(string(b), "\n", " "))
}

// waitFile waits, with a deadline, for the machine's process to note its
// start.
func waitStarts(t *testing.T, dir string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s := starts(t, dir); len(s) >= 2*n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("the machine's process never noted start %d: %v", n, starts(t, dir))
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

func touch(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Real processes: one that exits on its own leaves its machine stopped; a
// stop waits for a draining process; a resumed machine runs the same
// process with its first token, and an update's new token is seen only
// after a cold start.
func TestEngineRunnerProcessesFollowTheMachine(t *testing.T) {
	w, id, dir := shWorld(t, Options{UpdateDelay: 100 * time.Millisecond})

	w.start(t, id)
	waitStarts(t, dir, 1)
	touch(t, dir, "exit")
	w.waitState(t, id, "stopped")
	os.Remove(filepath.Join(dir, "exit"))

	w.start(t, id)
	waitStarts(t, dir, 2)
	expect(t, "stop", do(t, w.srv, "POST", "/machines/"+id+"/stop", "", nil), http.StatusOK, "")
	expect(t, "wait while draining", do(t, w.srv, "GET", "/machines/"+id+"/wait?state=stopped&timeout=1", "", nil), http.StatusRequestTimeout, "")
	touch(t, dir, "drained")
	w.waitState(t, id, "stopped")
	os.Remove(filepath.Join(dir, "drained"))

	w.start(t, id)
	first := waitStarts(t, dir, 3)
	expect(t, "suspend", do(t, w.srv, "POST", "/machines/"+id+"/suspend", "", nil), http.StatusOK, "")
	w.waitState(t, id, "suspended")
	w.start(t, id)
	if got := starts(t, dir); len(got) != len(first) {
		t.Fatalf("a resume started a new process: %v", got)
	}
	touch(t, dir, "drained") // the resumed process runs: it drains at once

	expect(t, "suspend", do(t, w.srv, "POST", "/machines/"+id+"/suspend", "", nil), http.StatusOK, "")
	w.waitState(t, id, "suspended")
	up := update("second")
	up.Config.Init.Cmd = []string{"-c", script, "machine", "/data"}
	up.Config.Mounts = w.em.Machines("a")[0].Config.Mounts
	expect(t, "update", do(t, w.srv, "POST", "/machines/"+id, "", up), http.StatusOK, "")
	w.waitState(t, id, "stopped")
	w.start(t, id)
	got := waitStarts(t, dir, 4)
	if got[len(got)-1] != "second" || got[len(got)-2] == first[len(first)-2] {
		t.Fatalf("after an update of a suspended machine it runs %v, want a new process with the new token", got[len(got)-2:])
	}
}
