package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// deployLocal runs a gateway with the local provider, whose engine is a
// 'wakegate engine' child that the gateway reaches on its unix front (no
// TLS on that hop), and its connect sidecar. The engine's buildkitd is the
// echo backend, through a shim that takes buildkitd's command line: the
// local provider runs buildkitd, not --engine-cmd. The gateway gets its own
// copy of the CA (two gateways cannot open one CA database).
func (b *bench) deployLocal(name, caDir, creds string) (*deployment, error) {
	d := &deployment{root: filepath.Join(b.work, name)}
	d.engineDir = filepath.Join(d.root, "engine-0")
	if err := os.MkdirAll(d.root, 0o700); err != nil {
		return nil, err
	}
	ownCA := filepath.Join(b.work, "ca-"+name)
	if out, err := exec.Command("cp", "-a", caDir, ownCA).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy the CA: %v\n%s", err, out)
	}
	shim := filepath.Join(b.work, "buildkitd-echo")
	script := `#!/bin/sh
# buildkitd's command line as 'wakegate engine' runs it; only --addr matters.
while [ $# -gt 0 ]; do
  case "$1" in --addr) sock=${2#unix://}; shift ;; esac
  shift
done
exec '` + b.opt.echo + `' "$sock"
`
	if err := os.WriteFile(shim, []byte(script), 0o755); err != nil {
		return nil, err
	}
	var err error
	for _, p := range []*string{&d.gateway, &d.admin, &d.connect} {
		if *p, err = freePort(); err != nil {
			return nil, err
		}
	}
	env := []string{"WAKEGATE_CA_PASSWORD=", "WAKEGATE_BIN=" + b.opt.bin}
	if d.gwCmd, err = b.start(name+"-gateway", env, b.opt.bin, "gateway", "--ca-dir", ownCA,
		"--provider", "local", "--state", d.root, "--buildkitd", shim,
		"--listen", d.gateway, "--admin", d.admin, "--ca-listen", "127.0.0.1:0",
		"--idle", "10m", "--max-conns-per-identity", "50000", "--log-level", "warn"); err != nil {
		return nil, err
	}
	if err := waitListening(d.gateway, 30*time.Second); err != nil {
		return nil, err
	}
	if d.connCmd, err = b.start(name+"-connect", nil, b.opt.bin, "connect", "--gateway", d.gateway,
		"--creds", creds, "--listen", d.connect, "--log-level", "warn"); err != nil {
		return nil, err
	}
	return d, waitListening(d.connect, 30*time.Second)
}

// localPids finds a local deployment's engine (the gateway's child) and
// echo backend (the engine's), once a connection has woken the engine, and
// checks that the engine serves its unix front.
func (d *deployment) localPids() (engine, echo int, err error) {
	if engine, err = childOf(d.gwCmd.Process.Pid); err != nil {
		return 0, 0, err
	}
	if echo, err = childOf(engine); err != nil {
		return 0, 0, err
	}
	args, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", engine))
	if err != nil {
		return 0, 0, err
	}
	if !strings.Contains(string(args), "--listen-unix") {
		return 0, 0, fmt.Errorf("the local engine (pid %d) was not started with its unix front: %q", engine, args)
	}
	return engine, echo, nil
}

// childOf is the first child of process pid (forked by any of its
// threads).
func childOf(pid int) (int, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil {
		return 0, err
	}
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			return strconv.Atoi(f[0])
		}
	}
	return 0, fmt.Errorf("process %d has no child", pid)
}
