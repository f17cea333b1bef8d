package pgtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// groupAlive reports whether a process other than a zombie is in process
// group pgid. kill(-pgid, 0) would count zombies, and orphaned backends
// stay zombies where nothing reaps them (a container whose first process
// is not an init).
func groupAlive(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // it exited while we looked
		}
		// pid (comm) state ppid pgrp …; comm may hold spaces and parens.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			return true
		}
	}
	return false
}
