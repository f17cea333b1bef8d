package main

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestFileLimitIsRaisedToTheHardLimit(t *testing.T) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	orig := lim
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &orig) })
	lim.Cur = min(lim.Max, 256)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	got, err := raiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	if got != orig.Max || lim.Cur != orig.Max {
		t.Fatalf("soft limit after raising = %d (returned %d), want the hard limit %d", lim.Cur, got, orig.Max)
	}
}

func TestTheCAAPIKeepsThreeQuartersOfTheDescriptorsFree(t *testing.T) {
	for _, tc := range []struct {
		limit uint64
		want  int
	}{{64, 16}, {1024, 256}, {400, 100}, {1 << 20, 256}} {
		if got := caAPIConns(tc.limit); got != tc.want {
			t.Errorf("caAPIConns(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}
