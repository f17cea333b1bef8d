package main

import (
	"os"
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
