package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	flyapi "github.com/superfly/fly-go"

	"github.com/wakegate/wakegate/fly"
	"github.com/wakegate/wakegate/fly/flytest"
)

func runFly(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "fly", []subcommand{{"init", runFlyInit}, {"status", runFlyStatus}}, flyUsage, args, stdout, stderr)
}

func flyUsage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  wakegate fly <subcommand> [flags]

Subcommands:
  init    create, idempotently, the engine pool's volumes and machines (left stopped)
  status  list the pool's machines with state and volume

The API token comes from $FLY_API_TOKEN; the API's address from
$FLY_FLAPS_BASE_URL (default https://api.machines.dev), which also points
these commands at 'wakegate dev fly-emulator'. See docs/fly.md.
`)
}

func runFlyInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fly init", "fly init --app APP --region R --engines N --volume-size GB --image IMAGE", `
Creates one volume and one machine per engine in APP: the volume mounted at
`+fly.StatePath+` and placed on its own host (Fly's unique zones, with the
machine's size as a hint so that host can run it), the machine running
'wakegate engine' from IMAGE (see engine/Dockerfile) with a kill timeout of
300 s, which the engine is told (--kill-timeout) so that it always stops
cleanly, no restart policy, tagged with the pool's metadata. Machines are
left stopped: the gateway wakes them. Re-running converges: it adds what is
missing and never destroys a volume; a create whose answer was lost is
checked for before it is tried again, so none is billed twice.

With --suspend machines are sized so that Fly can suspend them (at most
2 GB of memory); use it with the gateway's --fly-suspend. Daily volume
snapshots are off unless --snapshots: a build cache is rebuilt, not
restored, and snapshots are billed per stored GB (docs/fly.md).`, stdout, stderr)
	var cfg fly.InitConfig
	fs.StringVar(&cfg.App, "app", "", "Fly app for the engine machines (required)")
	fs.StringVar(&cfg.Region, "region", "", "Fly region, e.g. ams (required)")
	fs.IntVar(&cfg.Engines, "engines", 1, "number of engines")
	fs.IntVar(&cfg.VolumeGB, "volume-size", 50, "cache volume size in GB (1 to 500)")
	fs.StringVar(&cfg.Image, "image", "", "engine image (required)")
	fs.StringVar(&cfg.Pool, "pool", "engines", "pool name, matched by the gateway's --fly-pool")
	fs.StringVar(&cfg.Engine, "engine", "buildkit", `engine the machines run: "buildkit", or "dagger" (an image with Dagger's engine in `+fly.DaggerBin+`; see docs/dagger.md)`)
	vmSize := fs.String("vm-size", "", "machine size preset, e.g. performance-2x (default performance-2x; performance-1x with --suspend)")
	vmMemory := fs.Int("vm-memory", 0, "machine memory in MB (default: the size's)")
	fs.BoolVar(&cfg.Suspend, "suspend", false, "size machines so that Fly can suspend them (at most 2 GB), for the gateway's --fly-suspend")
	fs.BoolVar(&cfg.Snapshots, "snapshots", false, "keep Fly's daily volume snapshots (5 days; billed per stored GB)")
	fs.DurationVar(&cfg.Idle, "idle", 10*time.Minute, "each engine's own idle self-stop, for when no gateway is alive (0: none)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *vmSize != "" || *vmMemory != 0 {
		size := *vmSize
		if size == "" {
			size = "performance-2x"
			if cfg.Suspend {
				size = "performance-1x"
			}
		}
		cfg.Guest = &flyapi.MachineGuest{}
		if err := cfg.Guest.SetSize(size); err != nil {
			return usageError("fly init", "--vm-size: %v", err)
		}
		if *vmMemory != 0 {
			cfg.Guest.MemoryMB = *vmMemory
		}
	}
	cfg.Token = os.Getenv("FLY_API_TOKEN")
	ms, err := fly.Init(ctx, cfg)
	printMachines(stdout, ms)
	return err
}

func runFlyStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fly status", "fly status --app APP [--pool NAME] [--json]", `
Lists the pool's engine machines with their state, region, private address
and volume, and names any stuck in a transient state longer than Fly's own
guidance allows (starting or stopping past the kill timeout, replacing for
more than 10 minutes).`, stdout, stderr)
	app := fs.String("app", "", "Fly app of the engine machines (required)")
	pool := fs.String("pool", "engines", "pool name")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *app == "" {
		return usageError("fly status", "--app is required")
	}
	ms, err := fly.Status(ctx, *app, *pool, os.Getenv("FLY_API_TOKEN"))
	if err != nil {
		return err
	}
	if *asJSON {
		if ms == nil {
			ms = []fly.MachineStatus{}
		}
		if err := json.NewEncoder(stdout).Encode(ms); err != nil {
			return err
		}
	} else {
		printMachines(stdout, ms)
	}
	if len(ms) == 0 {
		// Silence would read as "all is well": a typo in --app or --pool
		// is the likelier cause.
		return fmt.Errorf("fly status: app %s has no machines in pool %q: check --app and --pool, or run 'wakegate fly init --app %s --pool %s'", *app, *pool, *app, *pool)
	}
	return nil
}

func printMachines(w io.Writer, ms []fly.MachineStatus) {
	if len(ms) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tSTATE\tREGION\tADDRESS\tVOLUME\tNOTE")
	for _, m := range ms {
		note := m.Note
		if m.Created {
			note = "(created)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.ID, m.State, m.Region, m.PrivateIP, m.Volume, note)
	}
	tw.Flush()
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "fly-emulator" {
		fmt.Fprint(stderr, "Usage:\n  wakegate dev fly-emulator --listen ADDR --dir DIR\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return errUsage
	}
	fs := newFlags("dev fly-emulator", "dev fly-emulator [--listen 127.0.0.1:4280] [--dir DIR]", `
Runs an emulator of the Fly Machines API on this machine, so the Fly path
can be tried with no account: machines it starts are real 'wakegate engine'
processes, each on its own loopback address (127.0.0.x). Point the gateway
and the fly commands at it with FLY_FLAPS_BASE_URL=http://ADDR and any
FLY_API_TOKEN.`, stdout, stderr)
	listen := fs.String("listen", "127.0.0.1:4280", "address to serve the API on")
	dir := fs.String("dir", "", "directory for the machines' volumes (required)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args[1:], stdout); err != nil {
		return helpOK(err)
	}
	if *dir == "" {
		return usageError("dev fly-emulator", "--dir is required")
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	bin, err := wakegateBin()
	if err != nil {
		return err
	}
	// Fly's pace: boots in a few hundred ms, updates settle in seconds,
	// every action limited to 1/s (burst 3), Get to 5/s (burst 10).
	em := flytest.New(flytest.Options{Dir: *dir, StartDelay: 400 * time.Millisecond, StopDelay: 100 * time.Millisecond,
		UpdateDelay: 3 * time.Second, SuspendDelay: time.Second, RatePerSecond: 1, Burst: 3,
		Runner: &flytest.EngineRunner{Bin: bin, Log: log}, Log: log})
	defer em.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("fly emulator: listen on %s: %w", *listen, err)
	}
	srv := &http.Server{Handler: em, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("fly emulator listening", "addr", ln.Addr().String(), "hint", "export FLY_FLAPS_BASE_URL=http://"+ln.Addr().String())
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
