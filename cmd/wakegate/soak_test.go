//go:build soak

package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The soak run is not part of 'make test': 'make soak' runs it (SOAK=10m to
// change its length). For its duration it mixes real builds through
// connect, idle stops and wakes, certificate rotations (30 s certificates)
// and attacks on both public ports, and reports failed builds (must be 0),
// the process's RSS and goroutines over time, and what the attacks did.
var soakFor = flag.Duration("soak", 5*time.Minute, "how long the soak run lasts")

func TestSoak(t *testing.T) {
	requireRoot(t)
	buildctl := tool(t, "WAKEGATE_BUILDCTL", "buildctl")
	bctx := buildContext(t, staticBusybox(t))
	baseGoroutines := runtime.NumGoroutine()
	g := startCertGateway(t, "--cert-ttl", "30s", "--client-ttl", "30s", "--idle", "3s", "--engines", "2")
	creds := filepath.Join(t.TempDir(), "creds")
	mustRun(t, "certs", "issue", "--dir", g.caDir, "--name", "soak", "--ttl", "30s", "--out", creds)
	sc := background(t, "connect", "--gateway", g.addr, "--creds", creds, "--ca-url", g.caURL, "--listen", "127.0.0.1:0")
	m, _ := sc.waitFor(t, sidecarRE, 0, 10*time.Second)
	addr := "tcp://" + m[1]

	deadline := time.Now().Add(*soakFor)
	var builds, failed, attacks atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg sync.WaitGroup
	builder := func(pauseEvery int) {
		defer wg.Done()
		for i := 1; time.Now().Before(deadline); i++ {
			out, err := exec.CommandContext(t.Context(), buildctl, append([]string{"--addr", addr}, buildctlArgs(bctx)...)...).CombinedOutput()
			builds.Add(1)
			if err != nil {
				failed.Add(1)
				msg := fmt.Sprintf("%v: %s", err, lastLines(string(out), 5))
				firstErr.CompareAndSwap(nil, &msg)
			}
			if i%pauseEvery == 0 { // let the engines idle out, so the next build wakes one
				time.Sleep(5 * time.Second)
			}
		}
	}
	wg.Add(2)
	go builder(7)
	go builder(11)

	// Attacks, in turn, all the run long.
	wg.Add(1)
	go func() {
		defer wg.Done()
		caHost := strings.TrimPrefix(g.caURL, "https://")
		insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		for time.Now().Before(deadline) {
			// Garbage on the mTLS port.
			if c, err := net.DialTimeout("tcp", g.addr, 5*time.Second); err == nil {
				c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
				c.Close()
			}
			// A large body at the CA API.
			if resp, err := insecure.Post(g.caURL+"/1.0/sign", "application/json", io.LimitReader(zeros{}, 8<<20)); err == nil {
				resp.Body.Close()
			}
			// A burst of idle connections at the CA API, dropped.
			var idle []net.Conn
			for range 50 {
				if c, err := net.DialTimeout("tcp", caHost, 5*time.Second); err == nil {
					idle = append(idle, c)
				}
			}
			for _, c := range idle {
				c.Close()
			}
			attacks.Add(1)
			time.Sleep(time.Second)
		}
	}()

	// Samples.
	type sample struct {
		at         time.Duration
		rssKiB     int64
		goroutines int
		builds     int64
	}
	var samples []sample
	began := time.Now()
	tick := time.NewTicker(15 * time.Second)
	for time.Now().Before(deadline) {
		<-tick.C
		samples = append(samples, sample{time.Since(began).Round(time.Second), rssKiB(), runtime.NumGoroutine(), builds.Load()})
	}
	tick.Stop()
	wg.Wait()

	var report strings.Builder
	fmt.Fprintf(&report, "soak %s: %d builds, %d failed, %d attack rounds, %d wakes, %d idle stops, %d renewals\n",
		*soakFor, builds.Load(), failed.Load(), attacks.Load(),
		len(regexp.MustCompile(`msg="engine ready"`).FindAllString(g.logs.String(), -1)),
		len(regexp.MustCompile(`msg="engine stopped"`).FindAllString(g.logs.String(), -1)),
		len(regexp.MustCompile(`msg="certificate renewed"`).FindAllString(g.logs.String()+sc.String(), -1)))
	fmt.Fprintln(&report, "time\tRSS MiB\tgoroutines\tbuilds")
	for _, s := range samples {
		fmt.Fprintf(&report, "%s\t%.1f\t%d\t%d\n", s.at, float64(s.rssKiB)/1024, s.goroutines, s.builds)
	}
	t.Log("\n" + report.String())
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d builds failed; first: %s", f, builds.Load(), *firstErr.Load())
	}
	if len(samples) > 2 {
		first, last := samples[1], samples[len(samples)-1]
		if last.goroutines > first.goroutines*2+50 {
			t.Errorf("goroutines grew from %d to %d (baseline before the gateway %d)", first.goroutines, last.goroutines, baseGoroutines)
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func rssKiB() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
