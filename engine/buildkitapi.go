package engine

import (
	"context"
	"errors"
	"fmt"
	"io"

	controlapi "github.com/moby/buildkit/api/services/control"
	"github.com/moby/buildkit/client"
)

// activeBuilds asks BuildKit how many builds are in progress. A build that
// runs a long step sends nothing on the wire, so connections alone cannot
// tell an idle engine from a busy one; BuildKit's history can.
func activeBuilds(ctx context.Context, c *client.Client) (int, error) {
	stream, err := c.ControlClient().ListenBuildHistory(ctx, &controlapi.BuildHistoryRequest{ActiveOnly: true, EarlyExit: true})
	if err != nil {
		return 0, fmt.Errorf("list active builds: %w", err)
	}
	active := map[string]bool{}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("list active builds: %w", err)
		}
		if r := ev.GetRecord(); r != nil {
			active[r.GetRef()] = ev.GetType() == controlapi.BuildHistoryEventType_STARTED && r.GetCompletedAt() == nil
		}
	}
	n := 0
	for _, a := range active {
		if a {
			n++
		}
	}
	return n, nil
}

// cacheBytes is the size of BuildKit's cache records (its metadata
// databases are not counted).
func cacheBytes(ctx context.Context, c *client.Client) (int64, error) {
	du, err := c.DiskUsage(ctx)
	if err != nil {
		return 0, fmt.Errorf("disk usage: %w", err)
	}
	var n int64
	for _, u := range du {
		n += u.Size
	}
	return n, nil
}
