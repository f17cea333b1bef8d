package fly

import (
	"testing"

	fly "github.com/superfly/fly-go"
	"github.com/wakegate/wakegate/fly/flytest"
)

// TestEnginesReportTheirGuestCPUs: the provider knows each pool machine's
// size from its listing, before it ever starts it (the gateway's soft limit
// by size).
func TestEnginesReportTheirGuestCPUs(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{})
	m, err := w.fc.Launch(t.Context(), app, fly.LaunchMachineInput{
		Name: "engine-big", Region: "ams", SkipLaunch: true,
		Config: &fly.MachineConfig{Image: "engine", Metadata: map[string]string{PoolKey: "engines"},
			Guest: &fly.MachineGuest{CPUKind: "performance", CPUs: 8, MemoryMB: 16384}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, Config{})
	if _, err := p.Engines(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := p.CPUs(m.ID); got != 8 {
		t.Fatalf("CPUs(%s) = %d, want its guest's 8", m.ID, got)
	}
	if got := p.CPUs(w.ids[0]); got != 0 {
		t.Fatalf("CPUs of a machine whose config names no guest = %d, want 0 (unknown)", got)
	}
}
