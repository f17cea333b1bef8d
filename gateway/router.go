package gateway

import "fmt"

// Policy is how the pool places a client's session. A session is the
// connections of one client identity (its affinity key) to one engine: a
// CI job's many connections count once.
type Policy struct {
	// Soft is the number of sessions an engine takes before the next
	// client goes elsewhere; Hard is the most it ever takes. BuildKit
	// suits soft 1, hard 3 on a small machine: builds on one engine share
	// CPU and disk. SoftBySize sets each engine's soft limit by its CPUs
	// (SoftForCPUs).
	Soft, Hard int
	// PreferWarm sends a client to any running engine under its soft
	// limit before waking its stopped home (less waiting, more cache
	// misses).
	PreferWarm bool
	// MinRunning engines are kept running when idle.
	MinRunning int
}

// DefaultPolicy suits BuildKit.
var DefaultPolicy = Policy{Soft: 1, Hard: 3}

// SoftBySize as Policy.Soft sizes each engine's soft limit by its CPUs.
const SoftBySize = -1

// CPUsPerBuild is what one build keeps busy, for a soft limit by size:
// BuildKit runs a Dockerfile's independent stages in parallel, but most CI
// builds are chains of steps that each use one or two cores.
const CPUsPerBuild = 2

// SoftForCPUs is the soft limit of an engine with cpus CPUs: the builds it
// runs side by side without slowing them, cpus/CPUsPerBuild, at least 1
// (also when its size is unknown) and at most hard.
func SoftForCPUs(cpus, hard int) int {
	return min(max(cpus/CPUsPerBuild, 1), max(hard, 1))
}

// softFor is e's soft limit under p.
func (p Policy) softFor(e *Engine) int {
	if p.Soft == SoftBySize {
		return SoftForCPUs(e.CPUs(), p.Hard)
	}
	return p.Soft
}

// validate refuses limits no engine can keep.
func (p Policy) validate() error {
	if (p.Soft < 1 && p.Soft != SoftBySize) || p.Hard < max(p.Soft, 1) {
		return fmt.Errorf("pool policy: need 1 <= soft (%d) <= hard (%d), or soft by size", p.Soft, p.Hard)
	}
	return nil
}

// candidate is an engine as the router sees it.
type candidate struct {
	running  bool
	sessions int  // sessions it holds
	mine     bool // it already holds this key's session
	soft     int  // its soft limit; 0: the policy's
}

func (c candidate) underSoft(p Policy) bool {
	if c.soft > 0 {
		return c.sessions < c.soft
	}
	return c.sessions < p.Soft
}

// choose picks an index into ranked (the key's engines by rendezvous rank,
// home first), or -1 to hold the connection until a session ends:
//   - the engine already holding this key's session;
//   - home, if under its soft limit (waking it: a cache miss usually costs
//     more than a wake) — with PreferWarm, any running engine under its
//     soft limit first;
//   - the next-ranked engine under its soft limit, running ones first;
//   - the highest-ranked engine under its hard limit.
func (p Policy) choose(ranked []candidate) int {
	for i, c := range ranked {
		if c.mine {
			return i
		}
	}
	if len(ranked) == 0 {
		return -1
	}
	if p.PreferWarm {
		for i, c := range ranked {
			if c.running && c.underSoft(p) {
				return i
			}
		}
	}
	if ranked[0].underSoft(p) {
		return 0
	}
	for i, c := range ranked {
		if i > 0 && c.running && c.underSoft(p) {
			return i
		}
	}
	for i, c := range ranked {
		if i > 0 && c.underSoft(p) {
			return i
		}
	}
	for i, c := range ranked {
		if c.sessions < p.Hard {
			return i
		}
	}
	return -1
}
