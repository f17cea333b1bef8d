package gateway

import (
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/wire"
)

// TestAConnectionLogsOneLineAtClose runs connections through a real
// gateway and reads what it logged: each connection ends in exactly one
// "connection closed" line with the identity, engine, held time, bytes each
// way, duration and why it closed; a normal close is INFO, a failed wake
// WARN with its error; no line carries a nil error or a doubled prefix.
func TestAConnectionLogsOneLineAtClose(t *testing.T) {
	for _, tc := range []struct {
		name      string
		startErr  error
		wake      bool // a wake request rather than a stream
		level     slog.Level
		want      map[string]string // attributes with these exact values
		wantKeys  []string          // and these present
		wantNoKey []string          // and these absent
	}{
		{
			name:      "proxied and closed by the client",
			level:     slog.LevelInfo,
			want:      map[string]string{"identity": "ci", "engine": "e0", "bytes_in": "4", "bytes_out": "4", "reason": "client_closed"},
			wantKeys:  []string{"held_ms", "duration_ms", "remote"},
			wantNoKey: []string{"err"},
		},
		{
			name:      "wake request held until the client closes",
			wake:      true,
			level:     slog.LevelInfo,
			want:      map[string]string{"identity": "ci", "kind": "wake", "engine": "e0", "reason": "client_closed"},
			wantKeys:  []string{"held_ms", "duration_ms"},
			wantNoKey: []string{"err"},
		},
		{
			name:     "no engine",
			startErr: errors.New("machine host refused: out of capacity"),
			level:    slog.LevelWarn,
			want:     map[string]string{"identity": "ci", "bytes_in": "0", "bytes_out": "0", "reason": "no_engine"},
			wantKeys: []string{"held_ms", "duration_ms", "err"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newLogRecorder()
			h := &fakeHost{addr: echoEngine(t), startErr: tc.startErr}
			g := startGatewayOpts(t, h, gatewayOptions{wake: time.Second, config: func(c *Config) { c.Log = rec.logger() }})
			proto := ""
			if tc.wake {
				proto = wire.ProtoWake
			}
			c := g.dial(t, g.client, g.ca, proto)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.wake {
				r := wire.NewReader(c)
				for {
					e, err := r.Next()
					if err != nil {
						t.Fatalf("wake request: %v", err)
					}
					if e.Kind == wire.Ready {
						break
					}
				}
			} else if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if tc.startErr == nil && !tc.wake {
				if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
					t.Fatal(err)
				}
				c.CloseWrite()
			}
			if !tc.wake { // a wake request is held until the client closes it
				io.Copy(io.Discard, c) // until the gateway closes
			}
			c.Close()
			rec.waitFor(t, "connection closed", 1)

			lines := rec.matching("connection closed")
			if len(lines) != 1 {
				t.Fatalf("%d close lines, want exactly one: %+v", len(lines), lines)
			}
			l := lines[0]
			if l.Msg != "connection closed" || l.Level != tc.level {
				t.Errorf("close line %q at %s, want \"connection closed\" at %s", l.Msg, l.Level, tc.level)
			}
			for k, v := range tc.want {
				if l.Attrs[k] != v {
					t.Errorf("close line %s=%q, want %q (line %v)", k, l.Attrs[k], v, l.Attrs)
				}
			}
			for _, k := range tc.wantKeys {
				if _, ok := l.Attrs[k]; !ok {
					t.Errorf("close line lacks %s: %v", k, l.Attrs)
				}
			}
			for _, k := range tc.wantNoKey {
				if v, ok := l.Attrs[k]; ok {
					t.Errorf("close line has %s=%q, want none", k, v)
				}
			}
			for _, k := range []string{"held_ms", "duration_ms"} {
				if _, err := strconv.ParseInt(l.Attrs[k], 10, 64); err != nil {
					t.Errorf("%s=%q is not milliseconds", k, l.Attrs[k])
				}
			}
			for _, r := range rec.all() {
				checkLogHygiene(t, r)
			}
		})
	}
}

// doubledPrefix is the first part of an error chain repeated right after
// itself ("x: x: y" says x twice), or "".
func doubledPrefix(v string) string {
	parts := strings.Split(v, ": ")
	for i := 1; i < len(parts); i++ {
		if len(parts[i]) >= 3 && parts[i] == parts[i-1] {
			return parts[i]
		}
	}
	return ""
}

// checkLogHygiene fails for a record with a nil value or an error whose
// chain repeats a prefix.
func checkLogHygiene(t *testing.T, r loggedRecord) {
	t.Helper()
	for k, v := range r.Attrs {
		if v == "<nil>" {
			t.Errorf("log %q has %s=<nil>", r.Msg, k)
		}
		if p := doubledPrefix(v); p != "" {
			t.Errorf("log %q has %s=%q: %q twice", r.Msg, k, v, p)
		}
	}
}

func TestDoubledPrefix(t *testing.T) {
	for v, want := range map[string]string{
		"engine not ready: engine not ready: dial": "engine not ready",
		"wake engine e0: start: refused":           "",
		"a: a":                                     "",
	} {
		if got := doubledPrefix(v); got != want {
			t.Errorf("doubledPrefix(%q) = %q, want %q", v, got, want)
		}
	}
}
