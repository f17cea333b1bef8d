package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/gateway"
)

// TestStatusPrintsCacheAndCertificatesNearExpiry: the table shows a
// running engine's cache, "-" for a stopped one and "?" for one that could
// not tell; certificates expiring within a week, an engine's among them,
// are flagged, expired ones named so.
func TestStatusPrintsCacheAndCertificatesNearExpiry(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	st := gateway.Status{Ready: true,
		Engines: []gateway.EngineStatus{
			{ID: "engine-0", State: gateway.Running, CacheBytes: 3 << 30, UpSince: now.Add(-time.Hour)},
			{ID: "engine-1", State: gateway.Stopped},
			{ID: "engine-2", State: gateway.Running, CacheError: "the engine cannot tell"},
		},
		Certs: []gateway.CertExpiry{
			{Name: "gateway", NotAfter: now.Add(20 * time.Hour)},
			{Name: "ca_root", NotAfter: now.Add(10 * 365 * 24 * time.Hour)},
			{Name: "engine:engine-0", NotAfter: now.Add(-time.Minute)},
		},
	}
	var b strings.Builder
	printStatus(&b, st, now)
	out := b.String()
	for _, re := range []string{
		`(?m)^ENGINE\s+STATE\s+SESSIONS\s+CONNECTIONS\s+CACHE\s+`,
		`(?m)^engine-0\s+running\s+0\s+0\s+3\.0 GiB\s`,
		`(?m)^engine-1\s+stopped\s+0\s+0\s+-\s`,
		`(?m)^engine-2\s+running\s+0\s+0\s+\?\s`,
		`(?m)^gateway\s+\S+\s+20h0m0s\s+EXPIRES SOON$`,
		`(?m)^ca_root\s+\S+\s+\S+$`,
		`(?m)^engine:engine-0\s+\S+\s+EXPIRED$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status lacks %s:\n%s", re, out)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 40: "3.0 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
