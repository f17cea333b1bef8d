package gateway

// Policy is how the pool places a client's session. A session is the
// connections of one client identity (its affinity key) to one engine: a
// CI job's many connections count once.
type Policy struct {
	// Soft is the number of sessions an engine takes before the next
	// client goes elsewhere; Hard is the most it ever takes. BuildKit
	// suits soft 1, hard 3: builds on one engine share CPU and disk.
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

// candidate is an engine as the router sees it.
type candidate struct {
	running  bool
	sessions int  // sessions it holds
	mine     bool // it already holds this key's session
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
			if c.running && c.sessions < p.Soft {
				return i
			}
		}
	}
	if ranked[0].sessions < p.Soft {
		return 0
	}
	for i, c := range ranked {
		if i > 0 && c.running && c.sessions < p.Soft {
			return i
		}
	}
	for i, c := range ranked {
		if i > 0 && c.sessions < p.Soft {
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
