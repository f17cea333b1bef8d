package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/moby/buildkit/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// activity is how an engine is asked about its work, in the way that
// engine answers. Idle self-exit, the drain and /status (which the
// gateway's idle check reads) all go through it.
type activity interface {
	// Builds counts the work in progress: BuildKit's active builds, or
	// Dagger's client sessions. An error means the engine cannot tell,
	// and unknown is never idle.
	Builds(ctx context.Context) (int, error)
	// CacheBytes is the size of the engine's cache, 0 if it cannot tell.
	CacheBytes(ctx context.Context) (int64, error)
}

// buildkitActivity asks BuildKit's control API. An engine that speaks only
// part of it (a gRPC Unimplemented, as from Dagger's engine run through
// --engine-cmd) is counted by the front's connections instead: an answer
// it can never give must not keep it busy, or not ready, forever.
type buildkitActivity struct {
	c     *client.Client
	conns func() int64 // the front's open proxied connections
	log   *slog.Logger

	noHistory atomic.Bool // ListenBuildHistory answered Unimplemented (logged once)
}

func (a *buildkitActivity) Builds(ctx context.Context) (int, error) {
	n, err := activeBuilds(ctx, a.c)
	if isUnimplemented(err) {
		if !a.noHistory.Swap(true) {
			a.log.Warn("the engine does not implement BuildKit's build history; counting its connections instead", "err", err)
		}
		return int(a.conns()), nil
	}
	return n, err
}

func (a *buildkitActivity) CacheBytes(ctx context.Context) (int64, error) {
	n, err := cacheBytes(ctx, a.c)
	if isUnimplemented(err) {
		return 0, nil
	}
	return n, err
}

// isUnimplemented reports a gRPC Unimplemented, wrapped or not.
func isUnimplemented(err error) bool {
	return err != nil && status.Code(err) == codes.Unimplemented
}

// daggerActivity reads Dagger's own metrics, served by the namespace init
// on a unix socket: dagger_connected_clients (its live client sessions; a
// Dagger client holds its session for its whole run, so a long withExec
// with nothing on the wire still counts) and
// dagger_local_cache_total_disk_size_bytes (refreshed every
// daggerCacheInterval). The metrics are an experimental Dagger interface:
// if they cannot be read, the sessions are the front's open connections,
// which every Dagger client holds for its whole run too — every client
// reaches the engine through the front.
type daggerActivity struct {
	hc    *http.Client
	conns func() int64
	log   *slog.Logger

	unreadable atomic.Bool // the metrics could not be read (logged once per outage)
}

func newDaggerActivity(metricsSock string, conns func() int64, log *slog.Logger) *daggerActivity {
	var d net.Dialer
	return &daggerActivity{
		hc: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", metricsSock)
			},
			DisableKeepAlives: true,
		}},
		conns: conns,
		log:   log,
	}
}

// daggerMetrics are the values read from Dagger's metrics.
type daggerMetrics struct {
	clients    int
	cacheBytes int64
}

func (a *daggerActivity) read(ctx context.Context) (daggerMetrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://dagger/metrics", nil)
	if err != nil {
		return daggerMetrics{}, err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return daggerMetrics{}, fmt.Errorf("dagger metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return daggerMetrics{}, fmt.Errorf("dagger metrics: %s", resp.Status)
	}
	return parseDaggerMetrics(io.LimitReader(resp.Body, 4<<20))
}

func (a *daggerActivity) readOrWarn(ctx context.Context) (daggerMetrics, bool) {
	m, err := a.read(ctx)
	if err != nil {
		if !a.unreadable.Swap(true) {
			a.log.Warn("cannot read Dagger's metrics; counting the front's connections as its sessions", "err", err)
		}
		return m, false
	}
	if a.unreadable.Swap(false) {
		a.log.Info("Dagger's metrics readable again")
	}
	return m, true
}

func (a *daggerActivity) Builds(ctx context.Context) (int, error) {
	m, ok := a.readOrWarn(ctx)
	if !ok {
		return int(a.conns()), nil
	}
	return m.clients, nil
}

func (a *daggerActivity) CacheBytes(ctx context.Context) (int64, error) {
	m, ok := a.readOrWarn(ctx)
	if !ok {
		return 0, nil
	}
	return m.cacheBytes, nil
}

// parseDaggerMetrics reads the two gauges wakegate uses from Prometheus'
// text format. A missing client gauge is an error (the wrong endpoint, or
// a Dagger that renamed it); a missing or negative cache gauge (Dagger
// reports -1 when its count failed) is 0.
func parseDaggerMetrics(r io.Reader) (daggerMetrics, error) {
	var m daggerMetrics
	found := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i] // no labels on these gauges; tolerate them
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			continue
		}
		f, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		switch name {
		case "dagger_connected_clients":
			m.clients, found = max(0, int(f)), true
		case "dagger_local_cache_total_disk_size_bytes":
			m.cacheBytes = max(0, int64(f))
		}
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("dagger metrics: %w", err)
	}
	if !found {
		return m, errors.New("dagger metrics: no dagger_connected_clients gauge")
	}
	return m, nil
}
