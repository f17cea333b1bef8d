package gateway

import (
	"testing"
	"unsafe"
)

// TestFirstContactStaysInItsSizeClass: every proxied stream keeps one
// firstContact for its life. At 96 bytes (this session's first version)
// the gateway's idle RSS per connection rose by 1.5–2.5 KiB with mTLS to
// the engine (bench-peers, docs/performance.md), most likely because the
// TLS handshakes fill and empty that size class by the thousand and the
// long-lived objects kept its spans, mostly empty, in RSS. Within 80 bytes
// it costs what it holds.
func TestFirstContactStaysInItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(firstContact{}); n > 80 {
		t.Fatalf("firstContact is %d bytes, want at most 80: order its fields so that it packs", n)
	}
}
