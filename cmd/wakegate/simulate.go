package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wakegate/wakegate/gateway"
	"github.com/wakegate/wakegate/simulate"
)

func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("simulate", "simulate --trace FILE --engines N [--policy wakegate|always-on|fixed-idle=5m|all] [flags]", `
Replays a CI trace (CSV: arrival_s,duration_s,key and optionally queued_s,
when GitHub queued the job) against the gateway's real pool and engine
state machines on a virtual clock, and reports machine-hours billed (and
their ratio to the hours engines had a job), cold starts (jobs that waited
for a wake), jobs that met a warm engine, p50/p95 wait for an engine, the
cache-hit rate (jobs on an engine whose volume held their key's cache;
--volume and --cache-per-key evict the least recently used), how much
builds slowed down sharing an engine's CPUs (--cpus), and what pre-wakes
cost (--prewake replays GitHub's workflow_job webhook at queued_s).
Policies:
  wakegate        wakegate's idle stop (--idle) and placement (--prefer)
  always-on       every engine running all the time
  fixed-idle=D    stop after D idle, e.g. fixed-idle=5m (an autostop's pace)
  all             the three above, side by side
scripts/ci-week.csv is a sample week of one team's CI.`, stdout, stderr)
	trace := fs.String("trace", "", "CI trace CSV (required)")
	engines := fs.Int("engines", 3, "engines in the pool")
	policy := fs.String("policy", "all", "wakegate, always-on, fixed-idle=D or all")
	idle := fs.Duration("idle", 30*time.Second, "the gateway's idle grace (policy wakegate)")
	wake := fs.Duration("wake", 2*time.Second, "an engine's wake time, start to BuildKit answering")
	prefer := fs.String("prefer", "home", "placement: home or warm")
	soft := softLimitFlag(gateway.DefaultPolicy.Soft)
	fs.Var(&soft, "soft-limit", `sessions per engine before going elsewhere, or "auto": by each engine's --cpus`)
	hard := fs.Int("hard-limit", gateway.DefaultPolicy.Hard, "most sessions per engine")
	prewake := fs.Bool("prewake", false, "replay GitHub's workflow_job webhook: pre-wake each job's engine at its queued_s")
	grace := fs.Duration("prewake-grace", gateway.DefaultPrewakeGrace, "how long a pre-woken engine waits for its job")
	perKey := sizeFlag(0)
	fs.Var(&perKey, "cache-per-key", "cache one key (repository) keeps on its engine's volume, e.g. 8G (with --volume)")
	volume := sizeFlag(0)
	fs.Var(&volume, "volume", "each engine's cache volume, e.g. 50G: the least recently used key's cache is evicted when full (default: never)")
	var cpus cpuList
	fs.Var(&cpus, "cpus", "engines' CPUs, one for all or a comma-separated list per engine (e.g. 8,4,2): builds beyond cpus/2 on an engine slow down (default: never)")
	if err := parse(fs, args, stdout); err != nil {
		return helpOK(err)
	}
	switch {
	case *trace == "":
		return usageError("simulate", "--trace is required")
	case *engines < 1:
		return usageError("simulate", "--engines must be at least 1")
	case *prefer != "home" && *prefer != "warm":
		return usageError("simulate", "--prefer must be home or warm")
	case *wake <= 0 || *idle <= 0 || *grace <= 0:
		return usageError("simulate", "--wake, --idle and --prewake-grace must be positive")
	case *hard < max(int(soft), 1):
		return usageError("simulate", "need 1 <= --soft-limit <= --hard-limit")
	case (volume > 0) != (perKey > 0) || volume < perKey:
		return usageError("simulate", "--volume and --cache-per-key go together, the volume at least one key's cache")
	case int(soft) == gateway.SoftBySize && len(cpus) == 0:
		return usageError("simulate", "--soft-limit auto needs the engines' --cpus")
	}
	f, err := os.Open(*trace)
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	jobs, err := simulate.ParseTrace(f)
	f.Close()
	if err != nil {
		return err
	}
	if *prewake && !jobs[0].HasQueued {
		return usageError("simulate", "--prewake needs a trace with a queued_s column")
	}
	base := simulate.Config{Engines: *engines, Wake: *wake,
		Policy:  gateway.Policy{Soft: int(soft), Hard: *hard, PreferWarm: *prefer == "warm"},
		Prewake: *prewake, PrewakeGrace: *grace, CachePerKey: int64(perKey), Volume: int64(volume), CPUs: cpus}
	type run struct {
		name string
		cfg  simulate.Config
	}
	var runs []run
	add := func(p string) error {
		c := base
		switch {
		case p == "wakegate":
			c.Idle = *idle
		case p == "always-on":
			c.Idle, c.AlwaysOn = *idle, true
		case strings.HasPrefix(p, "fixed-idle="):
			d, err := time.ParseDuration(strings.TrimPrefix(p, "fixed-idle="))
			if err != nil || d <= 0 {
				return usageError("simulate", "--policy %s: want a positive duration, e.g. fixed-idle=5m", p)
			}
			c.Idle = d
		default:
			return usageError("simulate", "--policy %q: want wakegate, always-on, fixed-idle=D or all", p)
		}
		runs = append(runs, run{p, c})
		return nil
	}
	if *policy == "all" {
		for _, p := range []string{"wakegate", "always-on", "fixed-idle=5m"} {
			add(p)
		}
	} else if err := add(*policy); err != nil {
		return err
	}
	var names []string
	var results []simulate.Result
	for _, r := range runs {
		res, err := simulate.Run(append([]simulate.Job(nil), jobs...), r.cfg)
		if err != nil {
			return err
		}
		names = append(names, r.name)
		results = append(results, res)
	}
	fmt.Fprintf(stdout, "%d jobs over %s, %d engines, wake %s, placement %s (soft %s, hard %d)", len(jobs),
		results[0].Span.Round(time.Minute), *engines, *wake, *prefer, soft.String(), *hard)
	if len(cpus) > 0 {
		fmt.Fprintf(stdout, ", cpus %s", cpus.String())
	}
	if volume > 0 {
		fmt.Fprintf(stdout, ", volume %s of %s per key", volume.String(), perKey.String())
	}
	if *prewake {
		fmt.Fprintf(stdout, ", pre-wake (grace %s)", *grace)
	}
	fmt.Fprint(stdout, "\n\n")
	simulate.WriteReport(stdout, names, results)
	return nil
}

// softLimitFlag is --soft-limit: a number of sessions, or "auto"
// (gateway.SoftBySize): by each engine's CPUs.
type softLimitFlag int

func (f *softLimitFlag) String() string {
	if int(*f) == gateway.SoftBySize {
		return "auto"
	}
	return strconv.Itoa(int(*f))
}

func (f *softLimitFlag) Set(s string) error {
	if s == "auto" {
		*f = softLimitFlag(gateway.SoftBySize)
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return fmt.Errorf("want a number of sessions (at least 1) or auto")
	}
	*f = softLimitFlag(n)
	return nil
}

// sizeFlag is a byte size: a number with an optional K, M, G or T suffix
// (powers of 1024; a trailing B or iB is allowed).
type sizeFlag int64

func (f *sizeFlag) String() string {
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if int64(*f) >= u.n && int64(*f)%u.n == 0 {
			return strconv.FormatInt(int64(*f)/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(*f), 10)
}

func (f *sizeFlag) Set(s string) error {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	for suffix, m := range map[string]int64{"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40} {
		if rest, ok := strings.CutSuffix(t, suffix); ok {
			t, mult = rest, m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("want a size such as 8G")
	}
	*f = sizeFlag(n * mult)
	return nil
}

// cpuList is --cpus: one count for every engine, or one per engine.
type cpuList []int

func (c *cpuList) String() string {
	var parts []string
	for _, n := range *c {
		parts = append(parts, strconv.Itoa(n))
	}
	return strings.Join(parts, ",")
}

func (c *cpuList) Set(s string) error {
	*c = nil
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > 1024 {
			return fmt.Errorf("want CPU counts (1 to 1024), comma-separated")
		}
		*c = append(*c, n)
	}
	return nil
}
