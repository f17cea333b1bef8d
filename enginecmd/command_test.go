package enginecmd

import (
	"slices"
	"testing"
	"time"
)

func TestArgsCarryEverySetFieldAndNothingElse(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  Command
		want []string
	}{
		{"nothing set: the engine's defaults and environment", Command{}, []string{"engine"}},
		{"a local BuildKit engine", Command{
			State: "/s/engine-0", Listen: "127.0.0.1:0", AddrFile: "/s/engine-0/engine.addr", Name: "wakegate-engine-0",
			Buildkitd: "/bin/buildkitd", CAURL: "https://127.0.0.1:9443", CAFingerprint: "ab12",
			CertTTL: time.Hour, Drain: 20 * time.Second, Stop: 30 * time.Second, Kill: time.Minute,
		}, []string{"engine", "--state", "/s/engine-0", "--listen", "127.0.0.1:0", "--addr-file", "/s/engine-0/engine.addr",
			"--name", "wakegate-engine-0", "--buildkitd", "/bin/buildkitd", "--ca-url", "https://127.0.0.1:9443",
			"--ca-fingerprint", "ab12", "--cert-ttl", "1h0m0s", "--drain-timeout", "20s", "--stop-timeout", "30s", "--kill-timeout", "1m0s"}},
		{"a Fly machine running Dagger", Command{
			State: "/var/lib/wakegate", Listen: ListenOn(8372), Engine: KindDagger, EngineBin: "/opt/dagger",
			Kill: 300 * time.Second, Idle: 10 * time.Minute,
		}, []string{"engine", "--state", "/var/lib/wakegate", "--listen", "[::]:8372", "--engine", "dagger",
			"--engine-bin", "/opt/dagger", "--kill-timeout", "5m0s", "--idle", "10m0s"}},
		{"BuildKit is the default kind, not a flag", Command{Engine: "buildkit"}, []string{"engine"}},
		{"another engine", Command{EngineCmd: "my-engine {socket}"}, []string{"engine", "--engine-cmd", "my-engine {socket}"}},
	} {
		if got := tc.cmd.Args(); !slices.Equal(got, tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}
