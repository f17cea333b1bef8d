package engine

import (
	"fmt"
	"time"
)

// killMargin is kept between the end of the engine's own stop budget
// (drain, then the engine process's stop-timeout, after which it is
// SIGKILLed) and the host's SIGKILL: closing connections, and the bounded
// wait after a SIGKILL of our own, happen in it.
const killMargin = 10 * time.Second

// daggerMinStop is the shortest stop-timeout a Dagger engine is given.
// Dagger writes its clean-shutdown marker about half a second after SIGTERM
// once its clients are gone (they are: the front closes them first), and
// wipes its whole cache at the next start without it; 10 s leaves room for
// a loaded machine.
const daggerMinStop = 10 * time.Second

// fitKillTimeout fits the stop sequence inside the host's SIGTERM→SIGKILL
// budget kill (0: none): drain + stop + killMargin ≤ kill. The drain is
// shortened to fit; a stop that cannot fit alone is an error, since a
// SIGKILL from the host in the middle of an engine's own stop is what
// wipes a Dagger cache.
func fitKillTimeout(drain, stop, kill time.Duration) (time.Duration, error) {
	if kill <= 0 {
		return drain, nil
	}
	if stop+killMargin > kill {
		return 0, fmt.Errorf("engine: --stop-timeout %s and a %s margin do not fit in --kill-timeout %s (the host's SIGTERM-to-SIGKILL budget): lower --stop-timeout or raise the host's kill timeout",
			stop, killMargin, kill)
	}
	return min(drain, kill-stop-killMargin), nil
}

// CheckStopBudget says, before anything starts, whether an engine of kind
// can stop cleanly within these bounds: a Dagger engine's minimum stop, and
// the stop inside the host's kill timeout (see fitKillTimeout).
func CheckStopBudget(kind Kind, drain, stop, kill time.Duration) error {
	if kind == KindDagger && stop < daggerMinStop {
		return fmt.Errorf("engine: a Dagger engine needs --stop-timeout of at least %s (its clean-shutdown marker is written after SIGTERM; without it Dagger wipes its cache at the next start), got %s", daggerMinStop, stop)
	}
	_, err := fitKillTimeout(drain, stop, kill)
	return err
}
