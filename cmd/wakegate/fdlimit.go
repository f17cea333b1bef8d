package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// raiseFileLimit raises the soft limit on open files to the hard limit
// (the Go runtime does so too, but only on some paths, and says nothing)
// and returns it: every proxied connection costs the gateway two
// descriptors, and a low soft limit (1,024 is common) starves accept.
func raiseFileLimit() (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read the open-files limit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("raise the open-files limit to %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}

// caAPIConns is how many connections the CA API may hold given the
// process's open-files limit: at most a quarter of it (and 256), so that
// the mTLS port, the engines and the database always keep a reserve of
// three quarters, however many callers the public API attracts.
func caAPIConns(fileLimit uint64) int {
	return int(min(max(fileLimit/4, 16), 256))
}
