package main

import (
	"bytes"
	"fmt"
	"os"
)

// caPassword reads the CA key password: --password-file first, then
// $WAKEGATE_CA_PASSWORD. It returns nil when neither is set. Passwords never
// come from the command line, where other users could read them.
func caPassword(file string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read --password-file: %w", err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return nil, fmt.Errorf("--password-file %s is empty", file)
		}
		return b, nil
	}
	if p := os.Getenv("WAKEGATE_CA_PASSWORD"); p != "" {
		return []byte(p), nil
	}
	return nil, nil
}
