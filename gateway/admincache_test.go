package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestStatusShowsRunningEnginesCache: /status asks each running engine for
// its cache usage, never a stopped one (that would need a wake), and says
// when an engine could not answer.
func TestStatusShowsRunningEnginesCache(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answer    error
		wantBytes int64
		wantErr   string
	}{
		{"answers", nil, 123456789, ""},
		{"cannot answer", errors.New("engine /status: 503 not ready"), 0, "engine /status: 503 not ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPool(t, 2, DefaultPolicy)
			running, l, err := p.Acquire(t.Context(), "k", quiet)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release()
			var asked atomic.Int32
			h := NewAdminHandler(p, AdminOptions{Cache: func(ctx context.Context, addr string) (int64, error) {
				asked.Add(1)
				if addr != l.Addr {
					t.Errorf("asked %q, want the running engine's %q", addr, l.Addr)
				}
				return 123456789, tc.answer
			}})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
			var st Status
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
				t.Fatalf("/status: %v: %s", err, rec.Body)
			}
			if n := asked.Load(); n != 1 {
				t.Fatalf("engines asked = %d, want 1 (only the running one)", n)
			}
			for _, e := range st.Engines {
				switch {
				case e.ID == running.ID() && (e.CacheBytes != tc.wantBytes || e.CacheError != tc.wantErr):
					t.Errorf("running engine: cache %d %q, want %d %q", e.CacheBytes, e.CacheError, tc.wantBytes, tc.wantErr)
				case e.ID != running.ID() && (e.CacheBytes != 0 || e.CacheError != ""):
					t.Errorf("stopped engine: cache %d %q, want none", e.CacheBytes, e.CacheError)
				}
			}
		})
	}
}

// TestEveryAdminPathAnswers: each path AdminPaths lists (and the gateway's
// help names) is served.
func TestEveryAdminPathAnswers(t *testing.T) {
	h := NewAdminHandler(newTestPool(t, 1, DefaultPolicy), AdminOptions{})
	for _, path := range AdminPaths {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 {
			t.Errorf("GET %s = %d, want 200", path, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/nothing-here", nil))
	if rec.Code != 404 {
		t.Errorf("GET /nothing-here = %d, want 404", rec.Code)
	}
}
