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
	// Suspend stops machines by suspending them (faster wakes; see
	// docs/fly.md for its limits) instead of stopping them. Only a machine
	// Fly can suspend is (at most 2 GB of memory, no schedule), and only
	// when its engine answered before the stop.
	Suspend bool
	// ResumeWithin is how long a suspended machine may have slept and
	// still be resumed as it is. The resumed engine keeps the certificate
	// it enrolled for at its last cold start and renews it itself at two
	// thirds of its life — if it wakes before that certificate expires.
	// Longer, it is cold-started with a fresh enrolment token. Default 6 h:
	// a quarter of an engine certificate's 24 h life.
	ResumeWithin time.Duration
	// Port is the engine's mTLS port on each machine.
	Port int
	// CallTimeout bounds each API call. StartTimeout bounds a whole start
	// (leases, an update settling, the boot); StopTimeout how long a stop
	// is waited for before the engine is reported still stopping. Waits
	// longer than Fly's 60 s cap are made of several.
	CallTimeout, StartTimeout, StopTimeout time.Duration
	// LeaseTTL is how long a lease lives if its gateway dies holding it
	// (it is refreshed while held); LeaseWait is how long a held lease is
	// waited on.
	LeaseTTL, LeaseWait time.Duration
	// Prepare, if set, returns environment to set on the machine before
	// each start (a fresh single-use enrolment token).
	Prepare func(ctx context.Context, id string) (map[string]string, error)
	// Busy, if set, asks the engine at addr whether anyone uses it; it is
	// asked under the lease, just before a stop. An engine that cannot
	// answer is stopped, never suspended: its snapshot would not serve.
	Busy func(ctx context.Context, addr string) (bool, error)
	// Transport is the HTTP transport under the retries (tests).
	Transport http.RoundTripper
	// Observe, if set, hears every Machines API request attempt (each
	// retry is one): its method and the answer's status, 0 when none came.
	Observe func(method string, status int)
	Log     *slog.Logger
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
	c.LeaseTTL = max(c.LeaseTTL.Round(time.Second), time.Second) // Fly takes whole seconds
	if c.ResumeWithin <= 0 {
		c.ResumeWithin = 6 * time.Hour
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

	mu          sync.Mutex           // guards the maps below
	unhealthy   map[string]string    // machine id → the host's reason
	suspendedAt map[string]time.Time // machine id → when this gateway suspended it
	cpus        map[string]int       // machine id → its guest's CPUs, as last listed
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
		Transport: retryingTransport(observing(cfg.Transport, cfg.Observe), cfg.Log),
	})
	if err != nil {
		return nil, fmt.Errorf("fly provider: %w", err)
	}
	return &Provider{cfg: cfg, flaps: fc, unhealthy: map[string]string{}, suspendedAt: map[string]time.Time{}, cpus: map[string]int{}}, nil
}

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
	p.mu.Lock()
	for _, m := range ms {
		if m.Config != nil && m.Config.Metadata[PoolKey] == p.cfg.Pool && m.State != "destroyed" && m.State != "destroying" {
			ids = append(ids, m.ID)
			if m.Config.Guest != nil && m.Config.Guest.CPUs > 0 {
				p.cpus[m.ID] = m.Config.Guest.CPUs
			}
		}
	}
	p.mu.Unlock()
	if len(ids) == 0 {
		return nil, fmt.Errorf("app %s has no machines in pool %q: run 'wakegate fly init'", p.cfg.App, p.cfg.Pool)
	}
	return ids, nil
}

// CPUs is machine id's guest CPUs as Engines listed them (0 if unknown):
// the gateway sizes the engine's soft limit by it before it first wakes.
func (p *Provider) CPUs(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cpus[id]
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
