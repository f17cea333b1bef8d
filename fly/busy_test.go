package fly

import (
	"fmt"
	"testing"

	"github.com/wakegate/wakegate/gateway"
)

// The gateway keeps an engine whose stop fly skipped as busy running and
// billed; it must recognise fly's ErrBusy through any wrapping.
func TestBusyStopIsUnderstoodByTheGateway(t *testing.T) {
	err := fmt.Errorf("stop machine m1: %w (another gateway's clients)", ErrBusy)
	if !gateway.IsBusy(err) {
		t.Fatalf("gateway.IsBusy(%v) = false, want true", err)
	}
	if gateway.IsBusy(fmt.Errorf("stop machine m1: %w", fmt.Errorf("timeout"))) {
		t.Fatal("gateway.IsBusy is true for an ordinary stop failure")
	}
}
