package fly

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"github.com/superfly/fly-go/tokens"

	"github.com/wakegate/wakegate/fly/flytest"
)

const app = "engines-app"

// recorder is a Runner that records what the emulator runs; exit ends a
// machine's process on its own, and hold (when set) keeps stops draining
// until it is closed.
type recorder struct {
	mu      sync.Mutex
	started map[string]int
	stopped map[string]int
	thawed  map[string]int
	procs   map[string]chan struct{}
	hold    chan struct{}
}

func newRecorder() *recorder {
	return &recorder{started: map[string]int{}, stopped: map[string]int{}, thawed: map[string]int{}, procs: map[string]chan struct{}{}}
}

func (r *recorder) Start(m *fly.Machine, _ string) (<-chan struct{}, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started[m.ID]++
	ch := make(chan struct{})
	r.procs[m.ID] = ch
	return ch, nil
}

func (r *recorder) Stop(m *fly.Machine) error {
	r.mu.Lock()
	r.stopped[m.ID]++
	hold := r.hold
	r.mu.Unlock()
	if hold != nil {
		<-hold
	}
	r.exit(m.ID)
	return nil
}

func (r *recorder) Freeze(*fly.Machine) error { return nil }

func (r *recorder) Thaw(m *fly.Machine) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.thawed[m.ID]++
	return nil
}

// holdStops makes stops drain until the returned release is called (or
// the test ends: a failed test must not leave the emulator's Close
// waiting on a drain).
func (r *recorder) holdStops(t *testing.T) (release func()) {
	hold := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	r.mu.Lock()
	r.hold = hold
	r.mu.Unlock()
	return release
}

// exit ends the machine's process, as an engine's idle exit or a crash.
func (r *recorder) exit(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.procs[id]; ok {
		close(ch)
		delete(r.procs, id)
	}
}

func (r *recorder) count(c map[string]int, id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return c[id]
}

type world struct {
	em  *flytest.Emulator
	run *recorder
	fc  *flaps.Client
	ids []string
}

func (w *world) flaps(*testing.T) *flaps.Client { return w.fc }

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newWorld serves an emulator with n pool machines (stopped) and one
// machine of another pool, and points flaps at it.
func newWorld(t *testing.T, n int, opts flytest.Options) *world {
	t.Helper()
	rec := newRecorder()
	opts.Runner = rec
	opts.Dir = t.TempDir()
	if opts.StartDelay == 0 {
		opts.StartDelay = 50 * time.Millisecond
	}
	em := flytest.New(opts)
	srv := httptest.NewServer(em)
	t.Cleanup(func() { em.Close(); srv.Close() })
	t.Setenv("FLY_FLAPS_BASE_URL", srv.URL)
	fc, err := flaps.NewWithOptions(t.Context(), flaps.NewClientOpts{Tokens: tokens.Parse("test-token")})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{em: em, run: rec, fc: fc}
	for i := range n + 1 {
		size := 1
		v, err := fc.CreateVolume(t.Context(), app, fly.CreateVolumeRequest{Name: "cache", Region: "ams", SizeGb: &size})
		if err != nil {
			t.Fatal(err)
		}
		pool := "engines"
		if i == n {
			pool = "other"
		}
		m, err := fc.Launch(t.Context(), app, fly.LaunchMachineInput{
			Name: "engine-" + string(rune('a'+i)), Region: "ams", SkipLaunch: true,
			Config: &fly.MachineConfig{Image: "engine", Metadata: map[string]string{PoolKey: pool},
				Mounts: []fly.MachineMount{{Volume: v.ID, Path: "/var/lib/wakegate"}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if i < n {
			w.ids = append(w.ids, m.ID)
		}
	}
	return w
}

func newProvider(t *testing.T, cfg Config) *Provider {
	t.Helper()
	cfg.App, cfg.Token = app, "test-token"
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	p, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEnginesAreThePoolsMachines(t *testing.T) {
	w := newWorld(t, 2, flytest.Options{})
	ids, err := newProvider(t, Config{}).Engines(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || !((ids[0] == w.ids[0] && ids[1] == w.ids[1]) || (ids[0] == w.ids[1] && ids[1] == w.ids[0])) {
		t.Fatalf("engines = %v, want the pool's %v", ids, w.ids)
	}
}

func TestStartWaitsAndReadsTheAddressAtEveryWake(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{StartDelay: 200 * time.Millisecond})
	var prepared []string
	p := newProvider(t, Config{Prepare: func(_ context.Context, id string) (map[string]string, error) {
		prepared = append(prepared, id)
		return map[string]string{"WAKEGATE_TOKEN": "tok-" + id}, nil
	}})
	id := w.ids[0]
	addr, err := p.Start(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if st := w.em.State(app, id); st != "started" {
		t.Fatalf("Start returned with the machine %s", st)
	}
	if !strings.HasPrefix(addr, "tls://127.0.0.") || !strings.HasSuffix(addr, ":8372") {
		t.Fatalf("address %q is not the machine's private address", addr)
	}
	if len(prepared) != 1 {
		t.Fatalf("prepared %d times, want once per start", len(prepared))
	}
	for _, m := range w.em.Machines(app) {
		if m.ID == id && m.Config.Env["WAKEGATE_TOKEN"] != "tok-"+id {
			t.Fatalf("the machine did not get its token before starting: env %v", m.Config.Env)
		}
	}
	if err := p.Stop(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if st := w.em.State(app, id); st != "stopped" {
		t.Fatalf("Stop returned with the machine %s", st)
	}

	w.em.Migrate(app, id)
	again, err := p.Start(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if again == addr {
		t.Fatalf("after a migration the provider still used the old address %s", addr)
	}
}

func TestStartRetries429AndTransient5xx(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{})
	id := w.ids[0]
	w.em.Inject(flytest.Fault{Action: "start", Machine: id, Status: 429, RetryAfter: time.Second, Message: "rate limited"})
	w.em.Inject(flytest.Fault{Action: "get", Machine: id, Status: 500})
	w.em.Inject(flytest.Fault{Action: "wait", Machine: id, Status: 503})
	p := newProvider(t, Config{})
	began := time.Now()
	if _, err := p.Start(t.Context(), id); err != nil {
		t.Fatalf("a wake through a 429 and 5xx failed: %v", err)
	}
	if took := time.Since(began); took < time.Second {
		t.Fatalf("the retry after a 429 came after %s, before its Retry-After of 1s", took)
	}
	if got := w.em.Calls("start"); got != 2 {
		t.Fatalf("start calls = %d, want 2 (one 429, one retry)", got)
	}
}

func TestAHangingAPIFailsTheWakeWithinItsBound(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{})
	id := w.ids[0]
	w.em.Inject(flytest.Fault{Action: "start", Machine: id, Hang: time.Minute})
	p := newProvider(t, Config{CallTimeout: 300 * time.Millisecond})
	began := time.Now()
	_, err := p.Start(t.Context(), id)
	if err == nil || !strings.Contains(err.Error(), "start machine "+id) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a hanging start = %v, want a deadline error naming the machine", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("the wake took %s to give up on a hang", took)
	}
}

func TestTwoGatewaysStartAMachineOnce(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{StartDelay: 300 * time.Millisecond})
	id := w.ids[0]
	gws := []*Provider{newProvider(t, Config{}), newProvider(t, Config{})}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := gws[i%2].Start(t.Context(), id)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent start: %v", err)
		}
	}
	if got := w.em.Calls("start"); got != 1 {
		t.Fatalf("start calls = %d, want 1", got)
	}
	if got := w.run.count(w.run.started, id); got != 1 {
		t.Fatalf("the machine ran %d times", got)
	}
}

func TestHostWithoutCapacityIsReportedWithItsReason(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{})
	id := w.ids[0]
	w.em.NoCapacity(app, id, "insufficient memory available to fulfill request")
	p := newProvider(t, Config{LeaseWait: 200 * time.Millisecond})
	_, err := p.Start(t.Context(), id)
	var he interface{ HostUnavailable() bool }
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "insufficient memory") {
		t.Fatalf("start on a full host = %v, want a host error with the reason", err)
	}
	if reason := p.Unhealthy()[id]; !strings.Contains(reason, "insufficient memory") {
		t.Fatalf("machine not marked unhealthy: %v", p.Unhealthy())
	}
	// The lease was released on the failure path: a retry leases at once.
	w.em.NoCapacity(app, id, "")
	if _, err := p.Start(t.Context(), id); err != nil {
		t.Fatalf("start after capacity returned: %v", err)
	}
	if _, bad := p.Unhealthy()[id]; bad {
		t.Fatal("a machine that started is still marked unhealthy")
	}
}

func TestStopAsksTheEngineUnderTheLease(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{})
	id := w.ids[0]
	busy := true
	p := newProvider(t, Config{Busy: func(context.Context, string) (bool, error) { return busy, nil }})
	if _, err := p.Start(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(t.Context(), id); !errors.Is(err, ErrBusy) {
		t.Fatalf("stop of a busy engine = %v, want ErrBusy", err)
	}
	if st := w.em.State(app, id); st != "started" {
		t.Fatalf("a busy engine was %s", st)
	}
	busy = false
	if err := p.Stop(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if st := w.em.State(app, id); st != "stopped" {
		t.Fatalf("an idle engine is %s after Stop", st)
	}
}

func TestSuspendModeSuspends(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{})
	id := w.ids[0]
	p := newProvider(t, Config{Suspend: true})
	if _, err := p.Start(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if st := w.em.State(app, id); st != "suspended" {
		t.Fatalf("machine is %s, want suspended", st)
	}
	if _, err := p.Start(t.Context(), id); err != nil {
		t.Fatalf("resume from suspended: %v", err)
	}
}
