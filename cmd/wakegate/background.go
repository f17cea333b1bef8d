package main

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// goBackground runs each fn until the returned stop is called, and stop
// waits for all of them: every goroutine has an owner that waits for it.
func goBackground(fns ...func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, len(fns))
	for _, fn := range fns {
		go func() {
			defer func() { done <- struct{}{} }()
			fn(ctx)
		}()
	}
	return func() {
		cancel()
		for range fns {
			<-done
		}
	}
}

// readToken returns the single-use token from --token-file, else the
// flag's value, else $WAKEGATE_TOKEN.
func readToken(flagValue, file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read --token-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if flagValue != "" {
		return flagValue, nil
	}
	return os.Getenv("WAKEGATE_TOKEN"), nil
}

// envOr is $key, or def when it is unset or empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
