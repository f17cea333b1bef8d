package engine

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Validate is what 'wakegate engine' asks before it spends its token: New's
// judgement of everything but the TLS config, which that token buys.
func TestValidateJudgesEverythingButTLSAndLogsNothing(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	ok := Config{Backend: Buildkitd{Dir: t.TempDir()}, Allow: []string{"wakegate-gateway"},
		DrainTimeout: 10 * time.Minute, StopTimeout: time.Minute, KillTimeout: 300 * time.Second,
		Log: slog.New(slog.NewTextHandler(&logs, nil))}
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"valid, without TLS", func(*Config) {}, ""},
		{"no state", func(c *Config) { c.Backend.Dir = "" }, "no state directory"},
		{"state that is a file", func(c *Config) { c.Backend.Dir = file }, "is not a directory"},
		{"nobody allowed", func(c *Config) { c.Allow = nil }, "no client identity"},
		{"a buildkitd config that is not there", func(c *Config) { c.UserConfig = filepath.Join(t.TempDir(), "none.toml") }, "buildkitd config"},
		{"a buildkitd config that is a directory", func(c *Config) { c.UserConfig = t.TempDir() }, "is not a file"},
		{"a stop that cannot fit the kill timeout", func(c *Config) { c.StopTimeout = 5 * time.Minute }, "--kill-timeout"},
		{"Dagger without its binaries", func(c *Config) { c.Backend.Kind, c.Backend.EngineBin = KindDagger, t.TempDir() }, "dagger-engine is missing"},
	} {
		c := ok
		tc.change(&c)
		err := c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate = %v, want %q", tc.name, err, tc.want)
		}
	}
	if logs.Len() != 0 {
		t.Errorf("Validate logged (New logs the shortened drain, once):\n%s", logs.String())
	}
	if _, err := New(ok); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Errorf("New without TLS = %v, want it refused", err)
	}
	withTLS := ok
	withTLS.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}
	if _, err := New(withTLS); err != nil {
		t.Errorf("New of a config Validate passed, with TLS: %v", err)
	}
}
