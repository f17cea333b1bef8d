package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// fly.toml's kill_timeout must cover the gateway's own stop, or Fly kills
// it while it stops its engines: open connections get shutdownGrace, then
// one round of engine stops (the gateway's stop bound, a minute), plus a
// margin for the API calls around them.
func TestFlyTomlKillTimeoutCoversTheGatewaysStop(t *testing.T) {
	for _, f := range flyTomls {
		t.Run(f, func(t *testing.T) { flyTomlKillTimeout(t, f) })
	}
}

// flyTomls are the gateway's Fly configurations: one gateway, and two on a
// shared database (docs/ha.md).
var flyTomls = []string{"fly.toml", "fly-ha.toml"}

func flyTomlKillTimeout(t *testing.T, file string) {
	b, err := os.ReadFile("../../" + file)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		KillTimeout int `toml:"kill_timeout"`
	}
	if err := toml.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	need := shutdownGrace + time.Minute + 10*time.Second
	if got := time.Duration(conf.KillTimeout) * time.Second; got < need || got > 300*time.Second {
		t.Fatalf("%s kill_timeout = %s, want between %s (the gateway's stop) and Fly's 300 s maximum", file, got, need)
	}
}

// fly.toml has Fly scrape the admin endpoint's /metrics on the port the
// gateway's --admin binds, on an address Fly's scraper reaches, and
// publishes no service on that port.
func TestFlyTomlScrapesTheAdminPortPrivately(t *testing.T) {
	for _, f := range flyTomls {
		t.Run(f, func(t *testing.T) { flyTomlMetrics(t, f) })
	}
}

func flyTomlMetrics(t *testing.T, file string) {
	b, err := os.ReadFile("../../" + file)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Processes map[string]string `toml:"processes"`
		Metrics   struct {
			Port int    `toml:"port"`
			Path string `toml:"path"`
		} `toml:"metrics"`
		Services []struct {
			InternalPort int `toml:"internal_port"`
		} `toml:"services"`
	}
	if err := toml.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("--admin [::]:%d ", conf.Metrics.Port)
	if conf.Metrics.Path != "/metrics" || !strings.Contains(conf.Processes["gateway"], want) {
		t.Fatalf("%s [metrics] = %+v, gateway command %q: want /metrics on the port of %q", file, conf.Metrics, conf.Processes["gateway"], want)
	}
	for _, s := range conf.Services {
		if s.InternalPort == conf.Metrics.Port {
			t.Fatalf("%s publishes the admin port %d as a service", file, s.InternalPort)
		}
	}
}

// The gateway command of each fly*.toml is one the gateway accepts: every
// flag exists and every value passes its checks (the Fly token aside, which
// Fly gives in the machine's environment).
func TestFlyTomlGatewayCommandsAreValid(t *testing.T) {
	for _, file := range flyTomls {
		b, err := os.ReadFile("../../" + file)
		if err != nil {
			t.Fatal(err)
		}
		var conf struct {
			Processes map[string]string `toml:"processes"`
		}
		if err := toml.Unmarshal(b, &conf); err != nil {
			t.Fatal(err)
		}
		args := strings.Fields(strings.ReplaceAll(conf.Processes["gateway"], "\\\n", " "))
		if len(args) == 0 || args[0] != "gateway" {
			t.Fatalf("%s: the gateway process runs %q", file, args)
		}
		t.Setenv("FLY_API_TOKEN", "from-fly-secrets")
		var f gatewayFlags
		fs := newFlags("gateway", "", "", io.Discard, io.Discard)
		f.define(fs)
		if err := fs.Parse(args[1:]); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := f.validate(); err != nil {
			t.Errorf("%s: the gateway refuses its command: %v", file, err)
		}
		if file == "fly-ha.toml" && f.ca.db == "" {
			t.Errorf("%s: the gateways share no database (--ca-db)", file)
		}
	}
}
