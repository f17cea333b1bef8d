package fly

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	fly "github.com/superfly/fly-go"
	"github.com/superfly/fly-go/flaps"
	"github.com/superfly/fly-go/tokens"
)

// PoolKey is the machine metadata key whose value names a machine's engine
// pool; 'wakegate fly init' sets it.
const PoolKey = "wakegate_pool"

// Config configures the provider.
type Config struct {
	// App is the Fly app holding the engine machines.
	App string
	// Token is a Fly API token (from FLY_API_TOKEN; never a flag).
	Token string
	// Pool selects machines whose metadata PoolKey equals it.
	Pool string
	// Suspend stops machines by suspending them (faster to wake; see
	// docs/fly.md for its limits) instead of stopping them.
	Suspend bool
	// Port is the engine's mTLS port on each machine.
	Port int
	// CallTimeout bounds each API call; StartTimeout bounds the wait for
	// "started"; StopTimeout the wait for "stopped".
	CallTimeout, StartTimeout, StopTimeout time.Duration
	// LeaseTTL is how long a lease lives if its gateway dies holding it;
	// LeaseWait is how long a held lease is waited on.
	LeaseTTL, LeaseWait time.Duration
	// Prepare, if set, returns environment to set on the machine before
	// each start (a fresh single-use enrolment token).
	Prepare func(ctx context.Context, id string) (map[string]string, error)
	// Busy, if set, asks the engine at addr whether anyone uses it; it is
	// asked under the lease, just before a stop.
	Busy func(ctx context.Context, addr string) (bool, error)
	// Transport is the HTTP transport under the retries (tests).
	Transport http.RoundTripper
	Log       *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.App == "" {
		return errors.New("fly provider: no app (--fly-app)")
	}
	if c.Token == "" {
		return errors.New("fly provider: no API token: set FLY_API_TOKEN")
	}
	if c.Pool == "" {
		c.Pool = "engines"
	}
	if c.Port == 0 {
		c.Port = 8372
	}
	for _, d := range []*time.Duration{&c.CallTimeout, &c.StartTimeout, &c.StopTimeout} {
		if *d <= 0 {
			*d = 30 * time.Second
		}
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.LeaseWait <= 0 {
		c.LeaseWait = 5 * time.Second
	}
	if c.Transport == nil {
		c.Transport = http.DefaultTransport
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Provider starts and stops an engine pool's Fly machines.
type Provider struct {
	cfg   Config
	flaps *flaps.Client

	mu        sync.Mutex        // guards unhealthy
	unhealthy map[string]string // machine id → the host's reason
}

// New builds the flaps client (base URL from FLY_FLAPS_BASE_URL, as flaps
// reads it) over a retrying transport.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	fc, err := flaps.NewWithOptions(ctx, flaps.NewClientOpts{
		UserAgent: "wakegate",
		Tokens:    tokens.Parse(cfg.Token),
		Transport: retryingTransport(cfg.Transport, cfg.Log),
	})
	if err != nil {
		return nil, fmt.Errorf("fly provider: %w", err)
	}
	return &Provider{cfg: cfg, flaps: fc, unhealthy: map[string]string{}}, nil
}

// HostError says a machine's host cannot take it now (no capacity, its
// volume attached elsewhere): the connection should go to another engine.
type HostError struct {
	Machine, Reason string
}

func (e *HostError) Error() string {
	return fmt.Sprintf("machine %s: its host cannot take it: %s", e.Machine, e.Reason)
}

// HostUnavailable marks the error for the gateway's rerouting.
func (e *HostError) HostUnavailable() bool { return true }

func (p *Provider) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(withAnswer(ctx), p.cfg.CallTimeout)
}

// apiErr names a call that ran out of time as such: a hanging API must
// read as a hang, not as "request canceled".
func (p *Provider) apiErr(ctx context.Context, what string, err error) error {
	if ctx.Err() == context.DeadlineExceeded {
		if a := answered(ctx); a != "" {
			return fmt.Errorf("%s: the Machines API kept answering %s, retried until the call's bound of %s ran out: %w", what, a, p.cfg.CallTimeout, context.DeadlineExceeded)
		}
		return fmt.Errorf("%s: the Machines API did not answer within %s: %w", what, p.cfg.CallTimeout, context.DeadlineExceeded)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Engines lists the pool's machine ids, in name order.
func (p *Provider) Engines(ctx context.Context) ([]string, error) {
	ctx, cancel := p.call(ctx)
	defer cancel()
	ms, err := p.flaps.List(ctx, p.cfg.App, "")
	if err != nil {
		return nil, p.apiErr(ctx, "list machines of "+p.cfg.App, err)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	var ids []string
	for _, m := range ms {
		if m.Config != nil && m.Config.Metadata[PoolKey] == p.cfg.Pool && m.State != "destroyed" && m.State != "destroying" {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("app %s has no machines in pool %q: run 'wakegate fly init'", p.cfg.App, p.cfg.Pool)
	}
	return ids, nil
}

// lease takes the machine's lease, waiting briefly for another gateway's.
// flaps retries a held lease for a minute; LeaseWait bounds it instead.
func (p *Provider) lease(ctx context.Context, id string) (nonce string, release func(), err error) {
	lctx, cancel := context.WithTimeout(ctx, p.cfg.LeaseWait)
	defer cancel()
	ttl := int(p.cfg.LeaseTTL.Seconds())
	l, err := p.flaps.AcquireLease(lctx, p.cfg.App, id, &ttl)
	if err != nil {
		return "", nil, fmt.Errorf("lease machine %s (another gateway may hold it): %w", id, err)
	}
	if l.Data == nil || l.Data.Nonce == "" {
		return "", nil, fmt.Errorf("lease machine %s: the API returned no nonce", id)
	}
	nonce = l.Data.Nonce
	return nonce, func() {
		// Released on every path, under its own bound: the caller's
		// context may be the one that ended.
		rctx, cancel := context.WithTimeout(context.Background(), p.cfg.CallTimeout)
		defer cancel()
		if err := p.flaps.ReleaseLease(rctx, p.cfg.App, id, nonce); err != nil {
			p.cfg.Log.Warn("release machine lease failed; it expires on its own", "machine", id, "ttl", p.cfg.LeaseTTL.String(), "err", err)
		}
	}, nil
}

func (p *Provider) get(ctx context.Context, id string) (*fly.Machine, error) {
	ctx, cancel := p.call(ctx)
	defer cancel()
	m, err := p.flaps.Get(ctx, p.cfg.App, id)
	if err != nil {
		return nil, p.apiErr(ctx, "get machine "+id, err)
	}
	return m, nil
}

// addr is the engine's address at the machine's current private IP.
func (p *Provider) addr(m *fly.Machine) (string, error) {
	if m.PrivateIP == "" {
		return "", fmt.Errorf("machine %s has no private address", m.ID)
	}
	return "tls://" + net.JoinHostPort(m.PrivateIP, strconv.Itoa(p.cfg.Port)), nil
}

// Start starts the machine from stopped or suspended, holding its lease,
// and waits (with the API's long poll) until it is started. The address is
// read after that, every time: it changes when Fly migrates the machine.
// "Started" is not "ready": the gateway asks the engine itself for that.
func (p *Provider) Start(ctx context.Context, id string) (string, error) {
	nonce, release, err := p.lease(ctx, id)
	if err != nil {
		return "", err
	}
	defer release()
	m, err := p.get(ctx, id)
	if err != nil {
		return "", err
	}
	if m.State != "started" {
		if p.cfg.Prepare != nil && m.Config != nil {
			if err := p.prepare(ctx, m, nonce); err != nil {
				return "", err
			}
		}
		if err := p.start(ctx, id, nonce); err != nil {
			return "", err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, p.cfg.StartTimeout+p.cfg.CallTimeout)
	err = p.flaps.Wait(wctx, p.cfg.App, id, flaps.WithWaitStates("started"), flaps.WithWaitTimeout(p.cfg.StartTimeout))
	cancel()
	if err != nil {
		return "", fmt.Errorf("machine %s did not start within %s: %w", id, p.cfg.StartTimeout, err)
	}
	p.setHealthy(id)
	if m, err = p.get(ctx, id); err != nil {
		return "", err
	}
	return p.addr(m)
}

func (p *Provider) prepare(ctx context.Context, m *fly.Machine, nonce string) error {
	env, err := p.cfg.Prepare(ctx, m.ID)
	if err != nil {
		return fmt.Errorf("prepare machine %s: %w", m.ID, err)
	}
	conf := *m.Config
	conf.Env = map[string]string{}
	for k, v := range m.Config.Env {
		conf.Env[k] = v
	}
	for k, v := range env {
		conf.Env[k] = v
	}
	cctx, cancel := p.call(ctx)
	defer cancel()
	if _, err := p.flaps.Update(cctx, p.cfg.App, fly.LaunchMachineInput{ID: m.ID, Config: &conf, Region: m.Region, SkipLaunch: true}, nonce); err != nil {
		return fmt.Errorf("update machine %s before start: %w", m.ID, err)
	}
	return nil
}

func (p *Provider) start(ctx context.Context, id, nonce string) error {
	cctx, cancel := p.call(ctx)
	defer cancel()
	_, err := p.flaps.Start(cctx, p.cfg.App, id, nonce)
	if err == nil {
		return nil
	}
	var fe *flaps.FlapsError
	if errors.As(err, &fe) && (fe.ResponseStatusCode == http.StatusPreconditionFailed || fe.ResponseStatusCode == http.StatusConflict) {
		// Capacity ("could not reserve resource") or a volume attached to
		// another machine: this host cannot take it now.
		he := &HostError{Machine: id, Reason: string(fe.ResponseBody)}
		p.setUnhealthy(id, he.Reason)
		return he
	}
	return p.apiErr(cctx, "start machine "+id, err)
}

// ErrBusy says a stop was skipped because the engine is in use. It says so
// to the gateway too (EngineBusy, gateway.IsBusy), which keeps the engine
// running and counted rather than taking the refusal for a failed stop.
var ErrBusy error = busyError{}

// busyError is ErrBusy's type: fly must not import gateway, so it meets
// the gateway's optional interface structurally.
type busyError struct{}

func (busyError) Error() string    { return "engine in use" }
func (busyError) EngineBusy() bool { return true }

// Stop stops (or suspends) the machine under its lease, after asking the
// engine once more, under that lease, whether anyone uses it.
func (p *Provider) Stop(ctx context.Context, id string) error {
	nonce, release, err := p.lease(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	m, err := p.get(ctx, id)
	if err != nil {
		return err
	}
	if m.State == "starting" {
		// A start that landed is still booting (a wake abandoned after its
		// start request, e.g. by a gateway shutting down): it will be
		// "started" shortly, so skipping the stop would leave it running
		// with no gateway that knows about it.
		wctx, cancel := context.WithTimeout(ctx, p.cfg.StartTimeout+p.cfg.CallTimeout)
		err := p.flaps.Wait(wctx, p.cfg.App, id, flaps.WithWaitStates("started"), flaps.WithWaitTimeout(p.cfg.StartTimeout))
		cancel()
		if err != nil {
			return fmt.Errorf("stop machine %s: it was starting and did not start within %s: %w", id, p.cfg.StartTimeout, err)
		}
		m.State = "started"
	}
	if m.State != "started" {
		return nil
	}
	if p.cfg.Busy != nil {
		if addr, err := p.addr(m); err == nil {
			bctx, cancel := p.call(ctx)
			busy, err := p.cfg.Busy(bctx, addr)
			cancel()
			if err == nil && busy {
				return fmt.Errorf("stop machine %s: %w (another gateway's clients)", id, ErrBusy)
			}
		}
	}
	cctx, cancel := p.call(ctx)
	want := "stopped"
	if p.cfg.Suspend {
		want = "suspended"
		err = p.flaps.Suspend(cctx, p.cfg.App, id, nonce)
	} else {
		err = p.flaps.Stop(cctx, p.cfg.App, fly.StopMachineInput{ID: id, Signal: "SIGTERM"}, nonce)
	}
	if err != nil {
		err = p.apiErr(cctx, want+" machine "+id, err)
	}
	cancel()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, p.cfg.StopTimeout+p.cfg.CallTimeout)
	defer cancel()
	if err := p.flaps.Wait(wctx, p.cfg.App, id, flaps.WithWaitStates(want), flaps.WithWaitTimeout(p.cfg.StopTimeout)); err != nil {
		return fmt.Errorf("machine %s not %s within %s: %w", id, want, p.cfg.StopTimeout, err)
	}
	return nil
}

func (p *Provider) setUnhealthy(id, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unhealthy[id] = reason
	p.cfg.Log.Warn("machine marked unhealthy", "machine", id, "reason", reason)
}

func (p *Provider) setHealthy(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.unhealthy, id)
}

// Unhealthy reports machines whose host refused them, with the host's
// reason.
func (p *Provider) Unhealthy() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.unhealthy))
	for k, v := range p.unhealthy {
		out[k] = v
	}
	return out
}
