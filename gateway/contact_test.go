package gateway

import (
	"testing"
	"unsafe"
)

// TestFirstContactStaysInItsSizeClass: every proxied stream keeps one
// firstContact for its life. In the 96-byte size class, which the TLS
// handshakes fill and empty by the thousand, those long-lived objects kept
// that class's spans, mostly empty, in the gateway's RSS: 1.5–2.5 KiB per
// idle connection (bench-peers, docs/performance.md). Within 80 bytes it
// costs what it holds.
func TestFirstContactStaysInItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(firstContact{}); n > 80 {
		t.Fatalf("firstContact is %d bytes, want at most 80: order its fields so that it packs", n)
	}
}
