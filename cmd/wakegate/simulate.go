package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/wakegate/wakegate/gateway"
	"github.com/wakegate/wakegate/simulate"
)

func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("simulate", "simulate --trace FILE --engines N [--policy wakegate|always-on|fixed-idle=5m|all] [flags]", `
Replays a CI trace (CSV: arrival_s,duration_s,key) against the gateway's
real pool and engine state machines on a virtual clock, and reports
machine-hours billed, cold starts (jobs that waited for a wake), p50/p95
wait for an engine, and the cache-hit rate (jobs on an engine that served
their key before). Policies:
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
	soft := fs.Int("soft-limit", gateway.DefaultPolicy.Soft, "sessions per engine before going elsewhere")
	hard := fs.Int("hard-limit", gateway.DefaultPolicy.Hard, "most sessions per engine")
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
	case *wake <= 0 || *idle <= 0:
		return usageError("simulate", "--wake and --idle must be positive")
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
	base := simulate.Config{Engines: *engines, Wake: *wake,
		Policy: gateway.Policy{Soft: *soft, Hard: *hard, PreferWarm: *prefer == "warm"}}
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
	fmt.Fprintf(stdout, "%d jobs over %s, %d engines, wake %s, placement %s (soft %d, hard %d)\n\n",
		len(jobs), results[0].Span.Round(time.Minute), *engines, *wake, *prefer, *soft, *hard)
	simulate.WriteReport(stdout, names, results)
	return nil
}
