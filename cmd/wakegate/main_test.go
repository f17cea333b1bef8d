package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestMain builds the wakegate binary that the local provider runs as each
// engine ('wakegate engine'): in-process gateways are test binaries, not
// wakegate. WAKEGATE_BIN, if set, names one already built.
func TestMain(m *testing.M) {
	if os.Getenv("WAKEGATE_BIN") == "" {
		dir, err := os.MkdirTemp("", "wakegate-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bin := filepath.Join(dir, "wakegate")
		cmd := exec.Command("go", "build", "-o", bin, ".")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build wakegate for the end-to-end tests:", err)
			os.Exit(1)
		}
		os.Setenv("WAKEGATE_BIN", bin)
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}
