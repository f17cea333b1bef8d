// Package memtrim gives a quiet process's memory back to the operating
// system once a burst of new connections has passed.
//
// A gateway or connect process that has just taken hundreds of
// connections holds, besides what those connections keep, the garbage of
// their handshakes: freed heap the runtime keeps for reuse (with GOGC=100
// the collector's goal is twice the live heap, and the background
// scavenger returns only what lies beyond it) and goroutine stacks that
// grew during the handshake and shrink only when a collection finds them
// mostly unused — at most by half per collection, and an idle process
// rarely collects. Measured with 5,000 idle tunnelled connections
// (scripts/benchpeers), that freed-but-kept heap was 9–24 KiB of the RSS
// per connection. Trimmer waits for the burst to end, then collects until
// the stacks stop shrinking and returns the free heap (debug.FreeOSMemory),
// at most every so often and only after enough new connections to be worth
// a few collections. It waits, too, for bytes to stop flowing (a bulk
// transfer's copies would pay for its collections and take again at once
// the buffers it frees), for MaxDefer at most.
//
// It imports only proxy, whose Join count is the default measure of new
// connections.
package memtrim
