package gateway

import (
	"fmt"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"
)

// flyBusy is a provider's busy error (EngineBusy), as fly's ErrBusy is.
type flyBusy struct{}

func (flyBusy) Error() string    { return "engine in use" }
func (flyBusy) EngineBusy() bool { return true }

func TestHostBusyAtStopKeepsTheEngineRunningAndBilled(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"structural EngineBusy", fmt.Errorf("stop machine e0: %w (another gateway's clients)", flyBusy{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := &fakeHost{stopErr: tc.err, addr: "tcp://127.0.0.1:7"}
				rec := newLogRecorder()
				e := NewEngine(EngineConfig{ID: "e0", Provider: h, Probe: readyProbe, Idle: testIdle, Log: rec.logger()})
				defer func() {
					h.stopErr = nil
					e.Close()
				}()
				mustAcquire(t, e).Release()
				time.Sleep(testIdle + time.Second)
				synctest.Wait()
				if got := h.stops.Load(); got != 1 {
					t.Fatalf("stops = %d, want 1", got)
				}
				st := e.Status()
				if st.State != Running {
					t.Fatalf("state after a busy stop = %s, want running (the machine still runs)", st.State)
				}
				billed := st.MachineSeconds
				time.Sleep(10 * time.Second)
				synctest.Wait()
				if now := e.Status().MachineSeconds; now < billed+10 {
					t.Fatalf("machine-seconds %v then %v: not counted after a busy stop", billed, now)
				}
				for _, r := range rec.all() {
					if r.Level >= slog.LevelError {
						t.Errorf("logged %v %q %v: a busy engine is not an error", r.Level, r.Msg, r.Attrs)
					}
				}
				if len(rec.matching("another gateway's clients use it")) != 1 {
					t.Errorf("no info line saying another gateway's clients use the engine; logs: %v", rec.all())
				}

				// The idle timer re-armed: another idle period asks again.
				time.Sleep(testIdle)
				synctest.Wait()
				if got := h.stops.Load(); got != 2 {
					t.Fatalf("stops after another idle period = %d, want 2", got)
				}
				// A connection meanwhile is served at once, without a new start.
				l := mustAcquire(t, e)
				defer l.Release()
				if l.Waited || l.Addr != "tcp://127.0.0.1:7" || h.starts.Load() != 1 {
					t.Fatalf("lease %+v after %d starts: want the running engine, not a new wake", l, h.starts.Load())
				}
			})
		})
	}
}
