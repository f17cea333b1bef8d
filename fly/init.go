package fly

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"github.com/superfly/fly-go/tokens"
)

// StatePath is where each engine machine mounts its cache volume.
const StatePath = "/var/lib/wakegate"

// KillTimeout is Fly's maximum: a Dagger engine needs up to 5 minutes to
// stop cleanly, and anything shorter risks its whole cache.
const KillTimeout = 300 * time.Second

// InitConfig describes the engine pool 'wakegate fly init' converges to.
type InitConfig struct {
	App, Region, Image, Pool, Token string
	Engines, VolumeGB, Port         int
	// Idle is each engine's own idle self-stop (so a machine stops even
	// with no gateway alive).
	Idle time.Duration
	Log  *slog.Logger
}

// MachineStatus is one engine machine as 'wakegate fly status' shows it.
type MachineStatus struct {
	ID, Name, State, Region, Volume, PrivateIP string
	Created                                    bool `json:",omitempty"`
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
func volumeName(i int) string  { return "wakegate_cache_" + strconv.Itoa(i) }

// Init creates, idempotently, one volume and one stopped machine per
// engine: the volume mounted at StatePath, a 300 s kill timeout, no
// restart policy (an engine's idle exit must leave it stopped). Re-running
// converges: it adds what is missing and never destroys a volume.
func Init(ctx context.Context, cfg InitConfig) ([]MachineStatus, error) {
	switch {
	case cfg.App == "" || cfg.Region == "" || cfg.Image == "":
		return nil, fmt.Errorf("fly init: --app, --region and --image are required")
	case cfg.Engines < 1 || cfg.VolumeGB < 1:
		return nil, fmt.Errorf("fly init: --engines and --volume-size must be at least 1")
	}
	if cfg.Pool == "" {
		cfg.Pool = "engines"
	}
	if cfg.Port == 0 {
		cfg.Port = 8372
	}
	fc, err := client(ctx, cfg.Token, cfg.Log)
	if err != nil {
		return nil, err
	}
	machines, err := fc.List(ctx, cfg.App, "")
	if err != nil {
		return nil, fmt.Errorf("fly init: list machines of %s: %w", cfg.App, err)
	}
	vols, err := fc.GetVolumes(ctx, cfg.App)
	if err != nil {
		return nil, fmt.Errorf("fly init: list volumes of %s: %w", cfg.App, err)
	}
	byName := map[string]*fly.Machine{}
	for _, m := range machines {
		if m.Config != nil && m.Config.Metadata[PoolKey] == cfg.Pool {
			byName[m.Name] = m
		}
	}
	var out []MachineStatus
	for i := range cfg.Engines {
		if m, ok := byName[machineName(i)]; ok {
			out = append(out, statusOf(m))
			continue
		}
		vol, err := freeVolume(ctx, fc, cfg, vols, i)
		if err != nil {
			return out, err
		}
		m, err := fc.Launch(ctx, cfg.App, fly.LaunchMachineInput{
			Name: machineName(i), Region: cfg.Region, SkipLaunch: true,
			Config: machineConfig(cfg, vol.ID),
		})
		if err != nil {
			return out, fmt.Errorf("fly init: create machine %s: %w", machineName(i), err)
		}
		s := statusOf(m)
		s.Created = true
		out = append(out, s)
	}
	return out, nil
}

// freeVolume returns engine i's volume, reusing an unattached one of its
// name (a machine that was destroyed left it, with its cache).
func freeVolume(ctx context.Context, fc *flaps.Client, cfg InitConfig, vols []fly.Volume, i int) (*fly.Volume, error) {
	for _, v := range vols {
		if v.Name == volumeName(i) && !v.IsAttached() && v.Region == cfg.Region {
			return &v, nil
		}
	}
	size := cfg.VolumeGB
	v, err := fc.CreateVolume(ctx, cfg.App, fly.CreateVolumeRequest{Name: volumeName(i), Region: cfg.Region, SizeGb: &size})
	if err != nil {
		return nil, fmt.Errorf("fly init: create volume %s: %w", volumeName(i), err)
	}
	return v, nil
}

func machineConfig(cfg InitConfig, volumeID string) *fly.MachineConfig {
	signal := "SIGTERM"
	cmd := []string{"engine", "--state", StatePath, "--listen", "[::]:" + strconv.Itoa(cfg.Port),
		// The engine's own stop budget fits inside the machine's kill timeout.
		"--stop-timeout", (KillTimeout - 10*time.Second).String()}
	if cfg.Idle > 0 {
		cmd = append(cmd, "--idle", cfg.Idle.String())
	}
	return &fly.MachineConfig{
		Image:      cfg.Image,
		Metadata:   map[string]string{PoolKey: cfg.Pool},
		Mounts:     []fly.MachineMount{{Volume: volumeID, Path: StatePath}},
		Init:       fly.MachineInit{Cmd: cmd},
		StopConfig: &fly.StopConfig{Timeout: &fly.Duration{Duration: KillTimeout}, Signal: &signal},
		Restart:    &fly.MachineRestart{Policy: fly.MachineRestartPolicyNo},
		Guest:      &fly.MachineGuest{CPUKind: "performance", CPUs: 2, MemoryMB: 4096},
	}
}

func statusOf(m *fly.Machine) MachineStatus {
	s := MachineStatus{ID: m.ID, Name: m.Name, State: m.State, Region: m.Region, PrivateIP: m.PrivateIP}
	if m.Config != nil {
		for _, mt := range m.Config.Mounts {
			s.Volume = mt.Volume
		}
	}
	return s
}

// Status lists the pool's machines with state and volume.
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
	var out []MachineStatus
	for _, m := range ms {
		if m.Config != nil && m.Config.Metadata[PoolKey] == pool {
			out = append(out, statusOf(m))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
