package main

import (
	"io"
	"testing"
	"time"

	"github.com/wakegate/wakegate/enginecmd"
)

// TestEngineCommandIsWhatTheEngineParses holds the hosts' command line
// (enginecmd: the local provider, 'fly init') to the flags 'wakegate
// engine' really has: every field reaches the flag it is meant for.
func TestEngineCommandIsWhatTheEngineParses(t *testing.T) {
	shared := enginecmd.Command{
		State: "/var/lib/wakegate", Listen: "127.0.0.1:0", AddrFile: "/var/lib/wakegate/engine.addr", Name: "wakegate-engine-7",
		ListenUnix: "/var/lib/wakegate/front.sock",
		CAURL:      "https://127.0.0.1:9443", CAFingerprint: "ab12", CertTTL: 2 * time.Hour,
		Drain: 20 * time.Second, Stop: 30 * time.Second, Kill: time.Minute, Idle: 5 * time.Minute,
	}
	dagger := shared
	dagger.Engine, dagger.EngineBin, dagger.EngineNet = enginecmd.KindDagger, "/opt/dagger", "host"
	buildkit := shared
	buildkit.Buildkitd, buildkit.EngineCmd = "/usr/bin/buildkitd", "my-engine {socket}"

	for name, c := range map[string]enginecmd.Command{"dagger": dagger, "buildkit": buildkit} {
		args := c.Args()
		if args[0] != "engine" {
			t.Fatalf("%s: the command is %q, want the engine subcommand first", name, args)
		}
		f, err := parseEngineFlags(args[1:], io.Discard, io.Discard)
		if err != nil {
			t.Fatalf("%s: 'wakegate engine' refuses what hosts run it with (%q): %v", name, args, err)
		}
		kind := c.Engine
		if kind == "" {
			kind = "buildkit"
		}
		for _, p := range []struct {
			flag      string
			got, want any
		}{
			{"--state", f.backend.state, c.State},
			{"--listen", f.front.listen, c.Listen},
			{"--addr-file", f.front.addrFile, c.AddrFile},
			{"--listen-unix", f.front.unix, c.ListenUnix},
			{"--name", f.enrol.name, c.Name},
			{"--engine", f.backend.kind, kind},
			{"--buildkitd", f.backend.buildkitd, c.Buildkitd},
			{"--engine-bin", f.backend.engineBin, c.EngineBin},
			{"--engine-cmd", f.backend.engineCmd, c.EngineCmd},
			{"--ca-url", f.enrol.caURL, c.CAURL},
			{"--ca-fingerprint", f.enrol.caFP, c.CAFingerprint},
			{"--cert-ttl", f.enrol.certTTL, c.CertTTL},
			{"--drain-timeout", f.life.drain, c.Drain},
			{"--stop-timeout", f.life.stopTimeout, c.Stop},
			{"--kill-timeout", f.life.killTimeout, c.Kill},
			{"--idle", f.life.idle, c.Idle},
		} {
			if p.got != p.want {
				t.Errorf("%s: %s parsed as %v, want %v", name, p.flag, p.got, p.want)
			}
		}
		if c.EngineNet != "" && f.backend.engineNet != c.EngineNet {
			t.Errorf("%s: --engine-net parsed as %q, want %q", name, f.backend.engineNet, c.EngineNet)
		}
	}
}
