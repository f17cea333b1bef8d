package fly

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"github.com/superfly/fly-go/tokens"

	"github.com/wakegate/wakegate/enginecmd"
)

// StatePath is where each engine machine mounts its cache volume.
const StatePath = "/var/lib/wakegate"

// KillTimeout is Fly's maximum kill timeout
// (https://fly.io/docs/reference/configuration/#kill_timeout-option): a
// Dagger engine needs up to 5 minutes to stop cleanly, and anything
// shorter risks its whole cache. The engine is told it (--kill-timeout)
// and fits its drain and stop inside.
const KillTimeout = 300 * time.Second

// DaggerBin is where the Dagger engine image keeps its binaries.
const DaggerBin = "/opt/dagger"

// InitConfig describes the engine pool 'wakegate fly init' converges to.
type InitConfig struct {
	App, Region, Image, Pool, Token string
	Engines, VolumeGB, Port         int
	// Engine is the engine kind the machines run: "buildkit" (default) or
	// "dagger".
	Engine string
	// Guest sizes new machines (default performance-2x, 4 GB; with
	// Suspend performance-1x, 2 GB).
	Guest *fly.MachineGuest
	// Suspend sizes machines so that Fly can suspend them (at most 2 GB).
	Suspend bool
	// Snapshots keeps Fly's daily volume snapshots (5 days, billed per
	// stored GB beyond a free 10 GB): off by default, a build cache is
	// rebuilt, not restored.
	Snapshots bool
	// Idle is each engine's own idle self-stop (so a machine stops even
	// with no gateway alive).
	Idle time.Duration
	Log  *slog.Logger
}

// MachineStatus is one engine machine as 'wakegate fly status' shows it.
type MachineStatus struct {
	ID, Name, State, Region, Volume, PrivateIP string
	Created                                    bool   `json:",omitempty"`
	Note                                       string `json:",omitempty"` // what needs attention
}

func client(ctx context.Context, token string, log *slog.Logger) (*flaps.Client, error) {
	if token == "" {
		return nil, fmt.Errorf("no Fly API token: set FLY_API_TOKEN")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return flaps.NewWithOptions(ctx, flaps.NewClientOpts{UserAgent: "wakegate", Tokens: tokens.Parse(token), Transport: retryingTransport(nil, log)})
}

func machineName(i int) string { return "wakegate-engine-" + strconv.Itoa(i) }

// volumeName is engine i's volume: Fly allows lowercase letters, digits
// and underscores, at most 30 characters.
func volumeName(i int) string { return "wakegate_cache_" + strconv.Itoa(i) }

// guest is the machine size init gives new machines.
func (cfg *InitConfig) guest() (*fly.MachineGuest, error) {
	g := cfg.Guest
	if g == nil {
		size := "performance-2x"
		if cfg.Suspend {
			size = "performance-1x"
		}
		g = &fly.MachineGuest{}
		if err := g.SetSize(size); err != nil {
			return nil, err
		}
	}
	if cfg.Suspend && g.MemoryMB > maxSuspendMB {
		return nil, fmt.Errorf("fly init: --suspend needs machines of at most %d MB (Fly does not suspend larger ones), not %d MB", maxSuspendMB, g.MemoryMB)
	}
	return g, nil
}

// Init creates, idempotently, one volume and one stopped machine per
// engine: the volume mounted at StatePath, a 300 s kill timeout, no
// restart policy (an engine's idle exit must leave it stopped). Re-running
// converges: it adds what is missing and never destroys a volume. A create
// whose answer is lost is settled by listing before it is tried again, so
// an ambiguous failure never bills a duplicate.
func Init(ctx context.Context, cfg InitConfig) ([]MachineStatus, error) {
	switch {
	case cfg.App == "" || cfg.Region == "" || cfg.Image == "":
		return nil, fmt.Errorf("fly init: --app, --region and --image are required")
	case cfg.Engines < 1 || cfg.VolumeGB < 1 || cfg.VolumeGB > 500:
		return nil, fmt.Errorf("fly init: --engines must be at least 1 and --volume-size 1 to 500 (GB)")
	case cfg.Engine != "" && cfg.Engine != "buildkit" && cfg.Engine != "dagger":
		return nil, fmt.Errorf("fly init: --engine must be buildkit or dagger")
	}
	if cfg.Pool == "" {
		cfg.Pool = "engines"
	}
	if cfg.Port == 0 {
		cfg.Port = 8372
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	guest, err := cfg.guest()
	if err != nil {
		return nil, err
	}
	cfg.Guest = guest
	fc, err := client(ctx, cfg.Token, cfg.Log)
	if err != nil {
		return nil, err
	}
	in := &initRun{cfg: cfg, fc: fc}
	if err := in.list(ctx); err != nil {
		return nil, err
	}
	var out []MachineStatus
	for i := range cfg.Engines {
		if m := in.machine(i); m != nil {
			s := statusOf(m, time.Now())
			if cfg.Suspend {
				if why := unsuspendable(m); why != "" {
					s.Note = "not suspendable: " + why
				}
			}
			out = append(out, s)
			continue
		}
		vol, err := in.volume(ctx, i)
		if err != nil {
			return out, err
		}
		m, err := in.createMachine(ctx, i, vol.ID)
		if err != nil {
			return out, err
		}
		s := statusOf(m, time.Now())
		s.Created = true
		out = append(out, s)
	}
	return out, nil
}

// initRun is one Init's view of the app, refreshed after an ambiguous
// create.
type initRun struct {
	cfg      InitConfig
	fc       *flaps.Client
	machines []*fly.Machine
	volumes  []fly.Volume
}

func (in *initRun) list(ctx context.Context) error {
	ms, err := in.fc.List(ctx, in.cfg.App, "")
	if err != nil {
		return fmt.Errorf("fly init: list machines of %s: %w", in.cfg.App, err)
	}
	vols, err := in.fc.GetVolumes(ctx, in.cfg.App)
	if err != nil {
		return fmt.Errorf("fly init: list volumes of %s: %w", in.cfg.App, err)
	}
	in.machines, in.volumes = ms, vols
	return nil
}

// machine is engine i's machine, if the pool has it.
func (in *initRun) machine(i int) *fly.Machine {
	for _, m := range in.machines {
		if m.Name == machineName(i) && m.Config != nil && m.Config.Metadata[PoolKey] == in.cfg.Pool && m.State != "destroyed" && m.State != "destroying" {
			return m
		}
	}
	return nil
}

// freeVolume is an unattached volume of engine i's name in the region (a
// destroyed machine left it, with its cache; or an ambiguous create made
// it).
func (in *initRun) freeVolume(i int) *fly.Volume {
	for _, v := range in.volumes {
		if v.Name == volumeName(i) && !v.IsAttached() && v.Region == in.cfg.Region {
			return &v
		}
	}
	return nil
}

// createAttempts bounds the creates of one volume or machine whose
// outcome stays unknown.
const createAttempts = 3

// volume returns engine i's volume, creating it if needed. It asks Fly to
// place it where the machine can run (compute hints: the guest and image,
// as flyctl sends them — internal/command/deploy/deploy_first.go,
// internal/command/scale/machine_defaults.go — without which a volume can
// land on a host with disk but no room for the machine:
// https://github.com/fastagent-sh/fastagent/pull/538) and on a host apart
// from the pool's other volumes (require_unique_zone, app-wide: the names
// differ), so one host's trouble takes one engine, not the pool.
func (in *initRun) volume(ctx context.Context, i int) (*fly.Volume, error) {
	if v := in.freeVolume(i); v != nil {
		return v, nil
	}
	size, unique, backups := in.cfg.VolumeGB, true, in.cfg.Snapshots
	req := fly.CreateVolumeRequest{Name: volumeName(i), Region: in.cfg.Region, SizeGb: &size,
		RequireUniqueZone: &unique, UniqueZoneAppWide: &unique, AutoBackupEnabled: &backups,
		ComputeRequirements: in.cfg.Guest, ComputeImage: in.cfg.Image}
	for attempt := 1; ; attempt++ {
		v, err := in.fc.CreateVolume(creating(ctx), in.cfg.App, req)
		if err == nil {
			return v, nil
		}
		if !ambiguous(err) || attempt == createAttempts {
			return nil, fmt.Errorf("fly init: create volume %s: %w", volumeName(i), err)
		}
		in.cfg.Log.Warn("create volume failed without a clear answer; checking whether it was made", "volume", volumeName(i), "err", err)
		if err := in.list(ctx); err != nil {
			return nil, err
		}
		if v := in.freeVolume(i); v != nil {
			return v, nil
		}
	}
}

// createMachine creates engine i's machine, stopped, on volume volID,
// settling an ambiguous failure by listing as volume does.
func (in *initRun) createMachine(ctx context.Context, i int, volID string) (*fly.Machine, error) {
	input := fly.LaunchMachineInput{Name: machineName(i), Region: in.cfg.Region, SkipLaunch: true, Config: machineConfig(in.cfg, volID)}
	for attempt := 1; ; attempt++ {
		m, err := in.fc.Launch(creating(ctx), in.cfg.App, input)
		if err == nil {
			return m, nil
		}
		if !ambiguous(err) || attempt == createAttempts {
			return nil, fmt.Errorf("fly init: create machine %s: %w", machineName(i), err)
		}
		in.cfg.Log.Warn("create machine failed without a clear answer; checking whether it was made", "machine", machineName(i), "err", err)
		if err := in.list(ctx); err != nil {
			return nil, err
		}
		if m := in.machine(i); m != nil {
			return m, nil
		}
	}
}

// ambiguous says whether a failed create may have been applied: anything
// but a clear 4xx refusal (a 429 was already retried below).
func ambiguous(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var fe *flaps.FlapsError
	if errors.As(err, &fe) {
		return fe.ResponseStatusCode >= 500 || fe.ResponseStatusCode == http.StatusRequestTimeout
	}
	return true // a timeout or a connection lost after the request went out
}

func machineConfig(cfg InitConfig, volumeID string) *fly.MachineConfig {
	signal := "SIGTERM"
	engine := enginecmd.Command{State: StatePath, Listen: enginecmd.ListenOn(cfg.Port),
		// The engine fits its drain and stop inside the machine's kill
		// timeout: Fly kills it at the end of that.
		Kill: KillTimeout, Idle: cfg.Idle}
	if cfg.Engine == enginecmd.KindDagger {
		engine.Engine, engine.EngineBin = enginecmd.KindDagger, DaggerBin
	}
	// The CA to enrol at, the token and the engine's name come in the
	// machine's environment at each start (the provider's Prepare).
	cmd := engine.Args()
	return &fly.MachineConfig{
		Image:      cfg.Image,
		Metadata:   map[string]string{PoolKey: cfg.Pool},
		Mounts:     []fly.MachineMount{{Volume: volumeID, Path: StatePath}},
		Init:       fly.MachineInit{Cmd: cmd},
		StopConfig: &fly.StopConfig{Timeout: &fly.Duration{Duration: KillTimeout}, Signal: &signal},
		Restart:    &fly.MachineRestart{Policy: fly.MachineRestartPolicyNo},
		Guest:      cfg.Guest,
	}
}
