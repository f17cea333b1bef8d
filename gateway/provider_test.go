package gateway

import (
	"errors"
	"fmt"
	"testing"
)

type hostFull struct{}

func (hostFull) Error() string         { return "no capacity" }
func (hostFull) HostUnavailable() bool { return true }

type draining struct{}

func (draining) Error() string       { return "still stopping" }
func (draining) StillStopping() bool { return true }

// notReally implements every capability and denies each.
type notReally struct{}

func (notReally) Error() string         { return "no" }
func (notReally) HostUnavailable() bool { return false }
func (notReally) EngineBusy() bool      { return false }
func (notReally) StillStopping() bool   { return false }

// Compile-time checks that the test stand-ins are what providers implement.
var (
	_ HostUnavailable = hostFull{}
	_ EngineBusy      = flyBusy{}
	_ StillStopping   = draining{}
)

func TestProviderErrorsAreReadByTheirCapabilityThroughAnyWrapping(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("engine e0: %w", fmt.Errorf("machine m0: %w", err)) }
	for _, tc := range []struct {
		name                   string
		err                    error
		host, busy, stillStops bool
	}{
		{"host cannot take it", wrap(hostFull{}), true, false, false},
		{"busy", wrap(flyBusy{}), false, true, false},
		{"still stopping", wrap(draining{}), false, false, true},
		{"a capability that says no", wrap(notReally{}), false, false, false},
		{"an ordinary error", wrap(errors.New("timeout")), false, false, false},
		{"nil", nil, false, false, false},
	} {
		if got := IsHostUnavailable(tc.err); got != tc.host {
			t.Errorf("%s: IsHostUnavailable = %v, want %v", tc.name, got, tc.host)
		}
		if got := IsBusy(tc.err); got != tc.busy {
			t.Errorf("%s: IsBusy = %v, want %v", tc.name, got, tc.busy)
		}
		if got := IsStillStopping(tc.err); got != tc.stillStops {
			t.Errorf("%s: IsStillStopping = %v, want %v", tc.name, got, tc.stillStops)
		}
	}
}
