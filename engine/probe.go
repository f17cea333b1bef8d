package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/moby/buildkit/client"
)

// Probe asks the BuildKit engine at addr for its workers. An engine opens its
// socket tens of milliseconds before it can serve, so an open port is not
// readiness; an answer listing at least one worker is.
func Probe(ctx context.Context, addr string) error {
	c, err := client.New(ctx, addr)
	if err != nil {
		return fmt.Errorf("probe %s: %w", addr, err)
	}
	defer c.Close()
	workers, err := c.ListWorkers(ctx)
	if err != nil {
		return fmt.Errorf("probe %s: list workers: %w", addr, err)
	}
	if len(workers) == 0 {
		return fmt.Errorf("probe %s: %w", addr, errNoWorkers)
	}
	return nil
}

var errNoWorkers = errors.New("engine has no workers yet")
