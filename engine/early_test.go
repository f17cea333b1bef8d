package engine

import "testing"

// TestEarlyStreamsGoOnlyToTheTLSFront: the gateway dials a held client's
// stream while the engine starts only where that saves something — the
// TLS front, which holds it until ready
// (TestFrontServesWhileTheEngineStartsAndAnswersReadyTheMomentItIs)
// — and not to the unix front, which hands a socket over only once ready.
func TestEarlyStreamsGoOnlyToTheTLSFront(t *testing.T) {
	var c Client
	for addr, want := range map[string]bool{
		"tls://127.0.0.1:7000":          true,
		"tls://[fdaa::3]:7000":          true,
		UnixScheme + "/run/engine.sock": false,
	} {
		if got := c.TakesEarlyStreams(addr); got != want {
			t.Errorf("TakesEarlyStreams(%q) = %v, want %v", addr, got, want)
		}
	}
}
