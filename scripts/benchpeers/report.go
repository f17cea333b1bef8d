package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// Targets of issue #12, as ratios from one run.
const (
	targetIdleBytes   = 32 << 10 // per idle tunnelled connection, gateway and connect
	targetNewConn     = 0.25     // wakegate's new-connection p50 over the peer pair's
	targetBulk        = 1.3      // wakegate's bulk MB/s over the peer pair's
	targetColdGateway = 5 * time.Millisecond
)

type report struct {
	opt     options
	started time.Time
	took    time.Duration
	paths   map[string]*pathInfo
	idle    []idleSet
	cold    coldStats
	// schedErr is why -sched's section was not measured.
	schedErr error
}

func (r *report) String() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	raw, peers := r.paths["raw"], r.paths["peers"]
	p("# make bench-peers — %s, %s, %d CPUs, %s (run took %s)\n", r.started.UTC().Format(time.RFC3339), runtime.Version(), runtime.NumCPU(), runtime.GOARCH, r.took.Round(time.Second))
	p("# One machine, loopback only, one echo binary; other work may share the machine: compare within this run.\n")
	p("#   raw            client -tcp-> echo\n")
	p("#   peers          client -tcp-> stunnel -mTLS-> haproxy (verify required) -unix-> echo\n")
	p("#   wakegate       client -tcp-> connect -mTLS-> gateway -mTLS-> engine front -unix-> echo   (exec provider: a remote engine's path)\n")
	p("#   wakegate-local client -tcp-> connect -mTLS-> gateway -unix-> echo2  (local provider: the engine hands its echo2 socket over on its unix front)\n")
	p("#   floor-go       client -tcp-> relay -tcp-> relay -unix-> echo     (two plain Go relays, no TLS: wakegate-local's shape with wakegate's work taken out; paced only)\n")
	p("#   floor-haproxy  client -tcp-> haproxy -tcp-> haproxy -unix-> echo (the same with two haproxy processes in mode tcp; paced only)\n")
	p("# open-files limit %d\n\n", r.opt.fdLimit)

	p("## New connections, one at a time, %s between them (dial, 32 bytes echoed, close; %d per path in each of %d rounds, the paths taking turns)\n", r.opt.gap, r.opt.paced, r.opt.rounds)
	p("# p50 and p99 over all rounds' connections; each round's own p50 after them.\n")
	p("%-15s %10s %10s   %s\n", "path", "p50", "p99", "p50 by round")
	for _, name := range pacedOrder {
		x := r.paths[name]
		p("%-15s %10s %10s  ", name, ms(x.paced.p50), ms(x.paced.p99))
		for _, c := range x.pacedRounds {
			p(" %.2f", float64(c.p50)/float64(time.Millisecond))
		}
		p("\n")
	}
	pacedP50 := func(c connStats) float64 { return float64(c.p50) }
	for _, name := range wakegatePaths {
		wg := r.paths[name]
		p("%s/peers: p50 %s (by round %s); %s/raw: p50 %s\n", name, ratio(float64(wg.paced.p50), float64(peers.paced.p50)),
			byRound(wg.pacedRounds, peers.pacedRounds, pacedP50), name, ratio(float64(wg.paced.p50), float64(raw.paced.p50)))
	}
	for _, name := range floorOrder {
		f := r.paths[name]
		p("%s/peers: p50 %s (by round %s); wakegate-local/%s: p50 %s\n", name, ratio(float64(f.paced.p50), float64(peers.paced.p50)),
			byRound(f.pacedRounds, peers.pacedRounds, pacedP50), name, ratio(float64(r.paths["wakegate-local"].paced.p50), float64(f.paced.p50)))
	}
	p("\n")

	p("## New connections back to back (dial, 32 bytes echoed, close)\n")
	p("%-15s %10s %10s %10s %12s %10s %10s\n", "path", "p50", "p99", "conns/s", "p50 ×16", "p99 ×16", "conns/s×16")
	for _, name := range pathOrder {
		x := r.paths[name]
		p("%-15s %10s %10s %10.0f %12s %10s %10.0f\n", name, ms(x.c1.p50), ms(x.c1.p99), x.c1.perSecond, ms(x.c16.p50), ms(x.c16.p99), x.c16.perSecond)
	}
	for _, name := range wakegatePaths {
		wg := r.paths[name]
		p("%s/peers: p50 %s, conns/s %s, conns/s×16 %s; %s/raw: p50 %s\n", name,
			ratio(float64(wg.c1.p50), float64(peers.c1.p50)), ratio(wg.c1.perSecond, peers.c1.perSecond),
			ratio(wg.c16.perSecond, peers.c16.perSecond), name, ratio(float64(wg.c1.p50), float64(raw.c1.p50)))
	}
	p("\n")

	p("## Bulk echo (one connection, 64 KiB writes for %s in each of %d rounds, every byte sent and echoed back; MB/s of one direction, all rounds together, then each round's)\n", r.opt.bulk, r.opt.rounds)
	for _, name := range pathOrder {
		x := r.paths[name]
		p("%-15s %8.0f MB/s (", name, x.bulk.mbps)
		for i, bk := range x.bulkRounds {
			if i > 0 {
				p(" ")
			}
			p("%.0f", bk.mbps)
		}
		p(")   CPU s/GB:")
		for _, pr := range x.procs {
			p(" %s %.2f", pr.name, cpuPerGB(x.bulk.cpu[pr.name], x.bulk.bytes))
		}
		p("\n")
	}
	bulkMBps := func(b bulkStats) float64 { return b.mbps }
	for _, name := range wakegatePaths {
		wg := r.paths[name]
		p("%s/peers: %s (by round %s); %s/raw: %s\n", name, ratio(wg.bulk.mbps, peers.bulk.mbps),
			byRound(wg.bulkRounds, peers.bulkRounds, bulkMBps), name, ratio(wg.bulk.mbps, raw.bulk.mbps))
	}
	p("\n")

	if r.opt.sched > 0 {
		r.writeSched(p)
	}

	p("## Idle tunnelled connections through wakegate (RSS growth per connection, lowest of %d readings 1 s apart)\n", idleReadings)
	for _, set := range r.idle {
		for _, s := range set.stats {
			p("%-15s %6d conns:", set.path, s.conns)
			for _, pr := range set.procs {
				p("  %s %.1f KiB", pr.name, float64(s.per[pr.name])/1024)
			}
			g := s.gatewayMem
			p("\n%15s gateway's runtime: heap spans %.1f KiB (objects in them %.1f), stacks %.1f KiB; RSS beyond both %.1f KiB\n", "",
				kib(g.heapInuse), kib(g.heapAlloc), kib(g.stackInuse), kib(s.per["gateway"]-g.heapInuse-g.stackInuse))
		}
	}
	p("\n")
	if len(r.cold.total) > 0 {
		c := r.cold
		p("## Cold connects (engine stopped; %d trials; p50, p99)\n", len(c.total))
		row := func(what string, d []time.Duration) {
			p("%-58s %10s %10s\n", what, ms(percentile(d, 50)), ms(percentile(d, 99)))
		}
		row("total", c.total)
		row("gateway before the start (dial to the start command's spawn)", c.before)
		row("host: its start command's spawn (os/exec Start)", c.spawn)
		row("host and engine (the spawn's end to 'engine ready')", c.host)
		row("gateway after ready (to the echo's first byte)", c.after)
		row("gateway's part (before + after)", c.gateway)
		row("gateway's part counting the spawn (before + spawn + after)", c.withSpawn)
		p("\n")
	}

	p("## Targets\n")
	for _, set := range r.idle {
		for _, s := range set.stats {
			for _, pr := range set.procs {
				p("%s: idle connection at %s, %d conns: %.1f KiB <= 32 KiB: %s\n", set.path, pr.name, s.conns, float64(s.per[pr.name])/1024, verdict(s.per[pr.name] <= targetIdleBytes))
			}
		}
	}
	for _, name := range wakegatePaths {
		wg := r.paths[name]
		nc := float64(wg.paced.p50) / float64(peers.paced.p50)
		p("%s: new-connection p50 (paced) %.2f× the peer pair (by round %s) <= %.2f×: %s\n", name, nc,
			byRound(wg.pacedRounds, peers.pacedRounds, pacedP50), targetNewConn, verdict(nc <= targetNewConn))
	}
	for _, name := range floorOrder {
		f := r.paths[name]
		nc := float64(f.paced.p50) / float64(peers.paced.p50)
		where := "over"
		if nc <= targetNewConn {
			where = "within"
		}
		p("  beside it, %s (two relays alone, no TLS): %.2f× the peer pair (by round %s), %s the target\n", name, nc,
			byRound(f.pacedRounds, peers.pacedRounds, pacedP50), where)
	}
	for _, name := range wakegatePaths {
		wg := r.paths[name]
		bk := wg.bulk.mbps / peers.bulk.mbps
		p("%s: bulk %.2f× the peer pair (by round %s) >= %.2f×: %s\n", name, bk,
			byRound(wg.bulkRounds, peers.bulkRounds, bulkMBps), targetBulk, verdict(bk >= targetBulk))
	}
	if len(r.cold.gateway) > 0 {
		g := percentile(r.cold.gateway, 50)
		p("gateway's part of a cold connect p50 %s <= %s: %s (counting the host's spawn: %s)\n", ms(g), ms(targetColdGateway),
			verdict(g <= targetColdGateway), ms(percentile(r.cold.withSpawn, 50)))
	}
	p("zero allocations per chunk in the copy loop: see 'make bench' (proxy, -benchmem)\n")
	return b.String()
}

// writeSched is -sched's section: per path, means per connection.
func (r *report) writeSched(p func(string, ...any)) {
	if r.schedErr != nil {
		p("## What a paced new connection waits on: not measured\n%v\n\n", r.schedErr)
		return
	}
	p("## What a paced new connection waits on (perf sched record; %d more per path, %s apart; means per connection)\n", r.opt.sched, r.opt.gap)
	p("# on CPU: the process's threads on a CPU within the connection; runs: times one was put on a CPU; waited: runnable, for a CPU.\n")
	p("# none on CPU: no process of the path on a CPU (the kernel waking the next one, loopback delivery, idle CPUs waking up).\n")
	for _, name := range pathOrder {
		st := r.paths[name].sched
		n := time.Duration(max(st.conns, 1))
		p("%-15s %s from dial to echo; none on CPU %s (%.0f%%)\n", name, ms(st.total/n), ms(st.none/n), 100*float64(st.none)/float64(max(st.total, 1)))
		for _, pr := range st.procs {
			p("    %-8s on CPU %6s  runs %4.1f  waited %6s\n", pr.name, us(pr.onCPU/n), float64(pr.ins)/float64(n), us(pr.delay/n))
		}
		p("    the median connection (%s), each stretch on a CPU: ", ms(st.median.len()))
		for i, s := range st.steps {
			if i > 0 {
				p(", ")
			}
			p("%s +%s %s", s.name, us(s.at), us(s.ran))
			if s.waited > 0 {
				p(" (waited %s)", us(s.waited))
			}
		}
		p("\n")
	}
	p("\n")
}

func us(d time.Duration) string { return fmt.Sprintf("%dµs", d.Microseconds()) }

// byRound is f of a over f of b in each round, as "0.31× 0.28× 0.35×".
func byRound[T any](a, b []T, f func(T) float64) string {
	var parts []string
	for i := range min(len(a), len(b)) {
		parts = append(parts, ratio(f(a[i]), f(b[i])))
	}
	return strings.Join(parts, " ")
}

func kib(b int64) float64 { return float64(b) / 1024 }
