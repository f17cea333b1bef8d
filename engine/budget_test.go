package engine

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestKillTimeoutShortensTheDrainAndRefusesAStopThatCannotFit(t *testing.T) {
	for _, tc := range []struct {
		name              string
		drain, stop, kill time.Duration
		want              time.Duration
		err               string
	}{
		{name: "no kill timeout keeps the drain", drain: 10 * time.Minute, stop: time.Minute, want: 10 * time.Minute},
		{name: "Fly's 300s with the defaults", drain: 10 * time.Minute, stop: time.Minute, kill: 300 * time.Second, want: 230 * time.Second},
		{name: "a local engine under the gateway's 60s stop", drain: 20 * time.Second, stop: 30 * time.Second, kill: time.Minute, want: 20 * time.Second},
		{name: "a drain that fits is kept", drain: time.Minute, stop: time.Minute, kill: 300 * time.Second, want: time.Minute},
		{name: "exactly full leaves no drain", drain: time.Minute, stop: 290 * time.Second, kill: 300 * time.Second, want: 0},
		{name: "a stop longer than the budget", drain: time.Minute, stop: 300 * time.Second, kill: 300 * time.Second, err: "do not fit in --kill-timeout 5m0s"},
		{name: "no room for the margin", drain: time.Minute, stop: 295 * time.Second, kill: 300 * time.Second, err: "10s margin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := fitKillTimeout(tc.drain, tc.stop, tc.kill)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("fitKillTimeout = %v, %v; want an error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("fitKillTimeout = %v, %v; want %v", got, err, tc.want)
			}
			if tc.kill > 0 && got+tc.stop+killMargin > tc.kill {
				t.Fatalf("drain %v + stop %v + margin %v exceeds the kill timeout %v", got, tc.stop, killMargin, tc.kill)
			}
		})
	}
}

func TestDaggerEngineRefusesAStopTooShortForItsCleanShutdownMarker(t *testing.T) {
	err := CheckStopBudget(KindDagger, time.Minute, 5*time.Second, 0)
	if err == nil || !strings.Contains(err.Error(), "clean-shutdown marker") {
		t.Fatalf("CheckStopBudget(dagger, stop 5s) = %v, want a refusal naming the marker", err)
	}
	if err := CheckStopBudget(KindBuildkit, time.Minute, 5*time.Second, 0); err != nil {
		t.Fatalf("CheckStopBudget(buildkit, stop 5s) = %v, want nil", err)
	}
}

func TestEngineLogsTheShortenedDrainOnceAtStart(t *testing.T) {
	var logs bytes.Buffer
	e, err := New(Config{
		Backend: Buildkitd{Dir: t.TempDir()}, TLS: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}, Allow: []string{"wakegate-gateway"},
		DrainTimeout: 10 * time.Minute, StopTimeout: time.Minute, KillTimeout: 300 * time.Second,
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.cfg.DrainTimeout != 230*time.Second {
		t.Fatalf("drain = %v, want 230s (300s - 60s stop - 10s margin)", e.cfg.DrainTimeout)
	}
	if n := strings.Count(logs.String(), "drain shortened"); n != 1 {
		t.Fatalf("%d log lines about the shortened drain, want 1:\n%s", n, logs.String())
	}
	_, err = New(Config{
		Backend: Buildkitd{Dir: t.TempDir()}, TLS: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}, Allow: []string{"wakegate-gateway"},
		StopTimeout: 5 * time.Minute, KillTimeout: 300 * time.Second,
	})
	if err == nil || !strings.Contains(err.Error(), "--kill-timeout") {
		t.Fatalf("New with a stop-timeout as long as the kill timeout = %v, want a refusal", err)
	}
}
