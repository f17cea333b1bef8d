package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/cluster"
	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/enginecmd"
	"github.com/wakegate/wakegate/exechost"
	"github.com/wakegate/wakegate/fly"
	"github.com/wakegate/wakegate/gateway"
	"github.com/wakegate/wakegate/identity"
)

// engineBins are the binaries a local host runs its engines with.
type engineBins struct {
	wakegate  string // 'wakegate engine'
	buildkitd string // "" for Dagger engines
}

// check finds what the local host runs and checks that this machine can
// run it; other hosts run their engines elsewhere.
func (h *hostFlags) check() (engineBins, error) {
	if h.provider != "local" {
		return engineBins{}, nil
	}
	var bins engineBins
	if h.local.engineKind == string(engine.KindDagger) {
		if err := engine.CheckDaggerHost(daggerBin(h.local.engineBin)); err != nil {
			return bins, err
		}
	} else {
		bkd, err := findBuildkitd(h.local.buildkitd)
		if err != nil {
			return bins, err
		}
		if err := engine.CheckLocalHost(bkd); err != nil {
			return bins, err
		}
		bins.buildkitd = bkd
	}
	self, err := wakegateBin()
	if err != nil {
		return bins, err
	}
	bins.wakegate = self
	return bins, nil
}

// hostCA is the authority engines enrol at.
type hostCA struct {
	ca  *certs.CA
	svc *caService
	// observe, if set, counts the host's API requests by method and
	// status (the Fly provider's; gatewayops.go).
	observe func(method string, status int)
}

// enrolment is what every engine of a host is given to enrol: the CA API
// as the engine reaches it, the root's fingerprint, and a single-use token
// (servers provisioner) for its name, identity.EngineName of its id.
type enrolment struct {
	caURL, fingerprint string
	token              func(id string) (string, error)
}

func (f *gatewayFlags) enrolment(c hostCA) enrolment {
	caURL := f.host.engineCAURL
	if caURL == "" {
		caURL = c.svc.url
		if f.host.provider == "local" {
			caURL = c.svc.internalURL // never waits behind the public API's callers
		}
	}
	return enrolment{caURL: caURL, fingerprint: c.ca.Fingerprint(), token: func(id string) (string, error) {
		name := identity.EngineName(id)
		return c.ca.Servers.Token(name, f.engineSANs(name, id), 10*time.Minute)
	}}
}

// newProvider builds the engine host. Engines enrol at the CA API with a
// single-use token: local engines get it in their environment at spawn,
// exec start commands in theirs, Fly machines in their config just before
// each start. ec is the gateway's one engine client; the fly provider asks
// it, under the machine's lease, whether an engine is busy.
func (f *gatewayFlags) newProvider(ctx context.Context, c hostCA, bins engineBins, ec *engine.Client, log *slog.Logger) (gateway.Provider, error) {
	e := f.enrolment(c)
	switch f.host.provider {
	case "fly":
		return asProvider(f.flyProvider(ctx, e, ec, c.observe, log))
	case "exec":
		x, err := f.execProvider(e, log)
		if err != nil {
			return nil, err
		}
		return shared(c, ec, x, log)
	}
	l, err := f.localProvider(e, bins, log)
	if err != nil {
		return nil, err
	}
	return shared(c, ec, l, log)
}

// shared wraps a local or exec host, when gateways share the CA's
// database, in the database's engine leases (cluster): an engine wanted
// through several gateways at once is started by one, which the others
// proxy to. Fly has machine leases of its own. Close the result
// (closeHost) once the gateway has stopped its engines.
func shared(c hostCA, ec *engine.Client, h cluster.Host, log *slog.Logger) (gateway.Provider, error) {
	db := c.svc.auth.SharedDB()
	if db == nil {
		return h, nil
	}
	holder := cluster.NewHolderID()
	log.Info("engines start under leases in the shared database", "holder", holder)
	return asProvider(cluster.New(cluster.Config{Host: h, Store: db, Holder: holder, Busy: ec.Busy, Log: log}))
}

// closeHost releases what the provider holds for this gateway (cluster's
// leases) once its engines are stopped.
func closeHost(p gateway.Provider) {
	if c, ok := p.(io.Closer); ok {
		c.Close()
	}
}

// asProvider returns p as a gateway.Provider, or a nil one (not a nil
// pointer in an interface) with err.
func asProvider[P gateway.Provider](p P, err error) (gateway.Provider, error) {
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (f *gatewayFlags) flyProvider(ctx context.Context, e enrolment, ec *engine.Client, observe func(string, int), log *slog.Logger) (*fly.Provider, error) {
	return fly.New(ctx, fly.Config{
		App: f.host.fly.app, Token: os.Getenv("FLY_API_TOKEN"), Pool: f.host.fly.pool, Suspend: f.host.fly.suspend,
		StartTimeout: f.pool.wakeTimeout, StopTimeout: f.host.fly.stopWait, LeaseTTL: f.host.fly.leaseTTL, Busy: ec.Busy, Log: log, Observe: observe,
		// A suspended engine resumes with the certificate it enrolled
		// for; past a quarter of its life it is cold-started instead.
		ResumeWithin: certs.ServerTTL / 4,
		// The machine's command ('fly init', enginecmd) takes its CA, name
		// and token from its environment.
		Prepare: func(_ context.Context, id string) (map[string]string, error) {
			tok, err := e.token(id)
			return map[string]string{"WAKEGATE_TOKEN": tok, "WAKEGATE_ENGINE_NAME": identity.EngineName(id),
				"WAKEGATE_CA_URL": e.caURL, "WAKEGATE_CA_FINGERPRINT": e.fingerprint}, err
		},
	})
}

func (f *gatewayFlags) execProvider(e enrolment, log *slog.Logger) (*exechost.Provider, error) {
	// The start command runs 'wakegate engine' with WAKEGATE_TOKEN and
	// WAKEGATE_ENGINE_NAME in the machine's environment.
	return exechost.New(exechost.Config{
		IDs: f.pool.engineIDs(), Start: f.host.exec.start, Stop: f.host.exec.stop, Status: f.host.exec.status,
		Token: e.token,
		Env:   []string{"WAKEGATE_CA_URL=" + e.caURL, "WAKEGATE_CA_FINGERPRINT=" + e.fingerprint},
		Log:   log,
	})
}

func (f *gatewayFlags) localProvider(e enrolment, bins engineBins, log *slog.Logger) (*engine.Local, error) {
	kind := engine.Kind(f.host.local.engineKind) // validated, and bins found for it by check
	// A local engine's host is this gateway, whose stop gives up (and kills
	// the engine's process group) after its default 60 s: drain, stop and
	// the margin fit in that as --kill-timeout.
	return engine.NewLocal(engine.LocalConfig{
		Dir: f.host.local.state, N: f.pool.engines, Wakegate: bins.wakegate, Buildkitd: bins.buildkitd,
		Engine: kind, EngineBin: daggerBin(f.host.local.engineBin),
		Command: enginecmd.Command{CAURL: e.caURL, CAFingerprint: e.fingerprint, CertTTL: f.ca.certTTL,
			Drain: 20 * time.Second, Stop: 30 * time.Second, Kill: 60 * time.Second},
		Token: e.token,
		Log:   log,
	})
}

// wakegateBin is the binary that runs local engines: $WAKEGATE_BIN, or this
// executable.
func wakegateBin() (string, error) {
	if p := os.Getenv("WAKEGATE_BIN"); p != "" {
		return p, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the wakegate binary for local engines (set WAKEGATE_BIN): %w", err)
	}
	return p, nil
}

// findBuildkitd resolves the buildkitd binary: the flag, then
// $WAKEGATE_BUILDKITD, then a buildkitd beside this executable (make puts
// both in bin/), then $PATH.
func findBuildkitd(flagValue string) (string, error) {
	for _, p := range []string{flagValue, os.Getenv("WAKEGATE_BUILDKITD")} {
		if p != "" {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("buildkitd %s: %w", p, err)
			}
			return p, nil
		}
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "buildkitd")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("buildkitd"); err == nil {
		return p, nil
	}
	return "", errors.New("buildkitd not found: run 'make tools' to build it into bin/, or pass --buildkitd PATH")
}
