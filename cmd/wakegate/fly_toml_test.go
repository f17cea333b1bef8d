package main

import (
	"fmt"
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
	b, err := os.ReadFile("../../fly.toml")
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
		t.Fatalf("fly.toml kill_timeout = %s, want between %s (the gateway's stop) and Fly's 300 s maximum", got, need)
	}
}

// fly.toml has Fly scrape the admin endpoint's /metrics on the port the
// gateway's --admin binds, on an address Fly's scraper reaches, and
// publishes no service on that port.
func TestFlyTomlScrapesTheAdminPortPrivately(t *testing.T) {
	b, err := os.ReadFile("../../fly.toml")
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
		t.Fatalf("fly.toml [metrics] = %+v, gateway command %q: want /metrics on the port of %q", conf.Metrics, conf.Processes["gateway"], want)
	}
	for _, s := range conf.Services {
		if s.InternalPort == conf.Metrics.Port {
			t.Fatalf("fly.toml publishes the admin port %d as a service", s.InternalPort)
		}
	}
}
