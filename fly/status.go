package fly

import (
	"context"
	"fmt"
	"sort"
	"time"

	fly "github.com/superfly/fly-go"
)

// stuckAfter is how long a machine may stay in a transient state before
// Fly's own guidance calls it stuck ("wedged"): starting, stopping,
// restarting or destroying for more than 5 minutes (it depends on the
// kill timeout, at most 5 minutes), updating for more than 10
// (https://fly.io/docs/machines/machine-states/#diagnosing-stuck-machines).
var stuckAfter = map[string]time.Duration{
	"starting": 5 * time.Minute, "stopping": 6 * time.Minute, "restarting": 5 * time.Minute,
	"destroying": 5 * time.Minute, "suspending": 5 * time.Minute, "creating": 5 * time.Minute,
	"updating": 10 * time.Minute, "replacing": 10 * time.Minute,
}

// stuck says how long the machine has been in a transient state past
// Fly's threshold, or "" if it is not stuck.
func stuck(m *fly.Machine, now time.Time) string {
	limit, transient := stuckAfter[m.State]
	if !transient {
		return ""
	}
	since, err := time.Parse(time.RFC3339Nano, m.UpdatedAt)
	if err != nil {
		return ""
	}
	if d := now.Sub(since); d > limit {
		return fmt.Sprintf("stuck %s for %s: 'fly machine stop %s -a APP', then start it; if it stays, ask Fly support (docs/fly.md)",
			m.State, d.Round(time.Minute), m.ID)
	}
	return ""
}

func statusOf(m *fly.Machine, now time.Time) MachineStatus {
	s := MachineStatus{ID: m.ID, Name: m.Name, State: m.State, Region: m.Region, PrivateIP: m.PrivateIP, Note: stuck(m, now)}
	if m.Config != nil {
		for _, mt := range m.Config.Mounts {
			s.Volume = mt.Volume
		}
	}
	return s
}

// Status lists the pool's machines with state and volume, naming those
// stuck in a transient state.
func Status(ctx context.Context, app, pool, token string) ([]MachineStatus, error) {
	if pool == "" {
		pool = "engines"
	}
	fc, err := client(ctx, token, nil)
	if err != nil {
		return nil, err
	}
	ms, err := fc.List(ctx, app, "")
	if err != nil {
		return nil, fmt.Errorf("fly status: list machines of %s: %w", app, err)
	}
	now := time.Now()
	var out []MachineStatus
	for _, m := range ms {
		if m.Config != nil && m.Config.Metadata[PoolKey] == pool {
			out = append(out, statusOf(m, now))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
