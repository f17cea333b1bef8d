package engine

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// TestMain lets this test binary serve as a Dagger engine's namespace init:
// Buildkitd.Self defaults to the running executable, which in these tests
// is the test binary, not wakegate.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == NSInitCommand {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		code, err := NSInit(ctx, os.Args[2:], slog.New(slog.NewTextHandler(os.Stderr, nil)))
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}
