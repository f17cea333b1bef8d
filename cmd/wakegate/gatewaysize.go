package main

import (
	"context"
	"flag"

	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/gateway"
)

// softLimitVar defines --soft-limit on p: a number of sessions, or "auto"
// (gateway.SoftBySize) for each engine's CPUs / 2, known from its host (a
// Fly machine's guest) or from the engine itself after it first woke.
func softLimitVar(fs *flag.FlagSet, p *int) {
	*p = gateway.DefaultPolicy.Soft
	fs.Var((*softLimitFlag)(p), "soft-limit", `sessions an engine takes before clients go to another, or "auto": its CPUs / 2, at most --hard-limit (docs/simulation.md)`)
}

// validSoftLimit says whether soft and hard make a policy.
func validSoftLimit(soft, hard int) bool {
	return (soft >= 1 || soft == gateway.SoftBySize) && hard >= max(soft, 1)
}

// engineCPUs asks an engine its size through the engine client's status
// call (the engine's /status), for soft limits by size; nil when the client
// cannot.
func engineCPUs(ec any) func(ctx context.Context, addr string) (int, error) {
	sc, ok := ec.(interface {
		Status(ctx context.Context, addr string) (engine.Status, error)
	})
	if !ok {
		return nil
	}
	return func(ctx context.Context, addr string) (int, error) {
		s, err := sc.Status(ctx, addr)
		return s.CPUs, err
	}
}
