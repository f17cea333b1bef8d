package fly

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	fly "github.com/superfly/fly-go"

	"github.com/wakegate/wakegate/fly/flytest"
)

const initApp = "pool-app"

func initWorld(t *testing.T, opts flytest.Options) *flytest.Emulator {
	t.Helper()
	w := newWorld(t, 0, opts)
	return w.em
}

func initConfig(engines int) InitConfig {
	return InitConfig{App: initApp, Region: "ams", Image: "registry.fly.io/engines:v1", Token: "test-token",
		Engines: engines, VolumeGB: 10, Idle: 10 * time.Minute, Log: discard()}
}

// fly init places each engine's volume on its own host, with the
// machine's size and image as compute hints, leaves snapshots off, and
// runs the engine with the machine's kill timeout.
func TestInitSpreadsVolumesWithComputeHints(t *testing.T) {
	em := initWorld(t, flytest.Options{Zones: 4})
	ms, err := Init(t.Context(), initConfig(3))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("init made %d machines, want 3", len(ms))
	}
	zones := map[string]bool{}
	for _, v := range em.Volumes(initApp) {
		zones[v.Zone] = true
		req, _ := em.VolumeRequest(initApp, v.ID)
		if req.ComputeRequirements == nil || req.ComputeRequirements.MemoryMB != 4096 || req.ComputeImage != "registry.fly.io/engines:v1" {
			t.Fatalf("volume %s was created without the machine's compute hints: %+v, image %q", v.Name, req.ComputeRequirements, req.ComputeImage)
		}
		if v.AutoBackupEnabled {
			t.Fatalf("volume %s keeps daily snapshots: a build cache is not worth their cost", v.Name)
		}
	}
	if len(zones) != 3 {
		t.Fatalf("3 volumes on %d hosts: one host's trouble would take several engines", len(zones))
	}
	for _, m := range em.Machines(initApp) {
		cmd := strings.Join(m.Config.Init.Cmd, " ")
		if !strings.Contains(cmd, "--kill-timeout 5m0s") || strings.Contains(cmd, "--stop-timeout") {
			t.Fatalf("machine command %q: want --kill-timeout equal to the machine's 300 s kill timeout", cmd)
		}
		if m.Config.StopConfig.Timeout.Duration != KillTimeout {
			t.Fatalf("kill timeout %s", m.Config.StopConfig.Timeout.Duration)
		}
	}
}

// --engine dagger gives the machines Dagger's engine from the image's
// /opt/dagger; --suspend sizes them so that Fly can suspend them.
func TestInitRunsDaggerAndSizesForSuspend(t *testing.T) {
	em := initWorld(t, flytest.Options{})
	cfg := initConfig(1)
	cfg.Engine, cfg.Suspend = "dagger", true
	if _, err := Init(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	m := em.Machines(initApp)[0]
	if cmd := strings.Join(m.Config.Init.Cmd, " "); !strings.Contains(cmd, "--engine dagger --engine-bin /opt/dagger") {
		t.Fatalf("machine command %q does not run Dagger's engine", cmd)
	}
	if g := m.Config.Guest; g == nil || g.MemoryMB > maxSuspendMB {
		t.Fatalf("a --suspend machine has %+v: Fly suspends at most %d MB", g, maxSuspendMB)
	}
	cfg.Guest = &fly.MachineGuest{CPUKind: "performance", CPUs: 2, MemoryMB: 4096}
	if _, err := Init(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "at most 2048 MB") {
		t.Fatalf("--suspend with 4 GB machines = %v, want a refusal naming the limit", err)
	}
}

// A create whose answer is lost (Fly applied it, then a 5xx or a timeout)
// is checked for by listing before it is tried again: no duplicate volume
// or machine is billed, and re-running changes nothing.
func TestInitSurvivesAmbiguousCreatesWithoutDuplicates(t *testing.T) {
	em := initWorld(t, flytest.Options{})
	em.Inject(flytest.Fault{Action: "create_volume", Status: http.StatusBadGateway, Apply: true})
	em.Inject(flytest.Fault{Action: "create", Status: http.StatusServiceUnavailable, Apply: true})
	em.Inject(flytest.Fault{Action: "create_volume", Status: http.StatusServiceUnavailable}) // not applied: tried again
	ms, err := Init(t.Context(), initConfig(2))
	if err != nil {
		t.Fatalf("init through ambiguous creates: %v", err)
	}
	vols, machines := em.Volumes(initApp), em.Machines(initApp)
	if len(ms) != 2 || len(vols) != 2 || len(machines) != 2 {
		t.Fatalf("init reported %d machines; the app has %d volumes and %d machines, want 2 of each", len(ms), len(vols), len(machines))
	}
	for _, v := range vols {
		if v.AttachedMachine == nil {
			t.Fatalf("volume %s (%s) is attached to nothing: a duplicate, billed for nothing", v.ID, v.Name)
		}
	}
	if again, err := Init(t.Context(), initConfig(2)); err != nil || slices.ContainsFunc(again, func(m MachineStatus) bool { return m.Created }) {
		t.Fatalf("re-running init: %v, %+v; want nothing created", err, again)
	}
}

// fly status names a machine stuck in a transient state past Fly's own
// threshold, and only then.
func TestStatusNamesMachinesStuckInATransientState(t *testing.T) {
	now := time.Now()
	m := &fly.Machine{ID: "m1", State: "stopping", UpdatedAt: now.Add(-2 * time.Minute).UTC().Format(time.RFC3339Nano)}
	if s := statusOf(m, now); s.Note != "" {
		t.Fatalf("a machine stopping for 2 minutes (an engine draining) is called %q", s.Note)
	}
	if s := statusOf(m, now.Add(10*time.Minute)); !strings.Contains(s.Note, "stuck stopping") {
		t.Fatalf("a machine stopping for 12 minutes: note %q, want it named stuck", s.Note)
	}
	m.State = "replacing"
	if s := statusOf(m, now.Add(5*time.Minute)); s.Note != "" {
		t.Fatalf("replacing for 7 minutes is within Fly's 10: note %q", s.Note)
	}
	m.State = "stopped"
	if s := statusOf(m, now.Add(time.Hour)); s.Note != "" {
		t.Fatalf("a stopped machine is called %q", s.Note)
	}
}
