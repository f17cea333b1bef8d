package main

import (
	"strings"
	"testing"
	"time"
)

// The floors are listed with the paths' paced figures and set beside the
// new-connection target, where they are not judged.
func TestTheReportSetsTheFloorsBesideTheNewConnectionTarget(t *testing.T) {
	paced := func(ms ...float64) *pathInfo {
		p := &pathInfo{}
		for _, m := range ms {
			p.pacedRounds = append(p.pacedRounds, connStats{p50: time.Duration(m * float64(time.Millisecond))})
		}
		p.paced = p.pacedRounds[0]
		return p
	}
	r := &report{opt: options{rounds: 1}, paths: map[string]*pathInfo{
		"raw": paced(0.5), "peers": paced(3), "wakegate": paced(1.5), "wakegate-local": paced(1.2),
		"floor-go": paced(1.3), "floor-haproxy": paced(0.6),
	}}
	got := r.String()
	for _, want := range []string{
		"floor-go           1.30 ms",
		"floor-haproxy/peers: p50 0.20× (by round 0.20×); wakegate-local/floor-haproxy: p50 2.00×",
		"beside it, floor-go (two relays alone, no TLS): 0.43× the peer pair (by round 0.43×), over the target",
		"beside it, floor-haproxy (two relays alone, no TLS): 0.20× the peer pair (by round 0.20×), within the target",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "floor-go: new-connection") {
		t.Error("a floor is judged against the target")
	}
}
