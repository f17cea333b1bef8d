package pgtest

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// runAs is the unprivileged user the cluster belongs to and its processes
// run as: initdb and postgres refuse to run as root. nil when the tests do
// not run as root: then the cluster is the test process's own.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var lastErr error
	// postgres is the user Debian's package creates; nobody exists
	// everywhere else.
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			lastErr = err
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			lastErr = fmt.Errorf("user %s has a non-numeric uid %q or gid %q", name, u.Uid, u.Gid)
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("pgtest: running as root, and neither user postgres nor nobody exists to run PostgreSQL as (run 'make deps', which creates postgres): %w", lastErr)
}

// makeDir creates the cluster's directory, owned by cred's user (when set)
// and private to it. Its parent must let that user through: os.TempDir,
// normally /tmp, does, where a test's t.TempDir (0700, root's) would not.
func makeDir(cred *syscall.Credential) (string, error) {
	dir, err := os.MkdirTemp("", "wakegate-pgtest-")
	if err != nil {
		return "", fmt.Errorf("pgtest: temporary directory: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("pgtest: give %s to uid %d: %w", dir, cred.Uid, err)
		}
	}
	return dir, nil
}
