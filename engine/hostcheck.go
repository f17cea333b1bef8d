package engine

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// CheckLocalHost says what this machine lacks to run local engines with
// buildkitd at bin, before the gateway opens any socket: an engine that
// cannot start would otherwise be found out by the first client, after a
// wake. BuildKit's OCI worker runs build steps as containers: it needs root
// and runc.
func CheckLocalHost(bin string) error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("local engines need root (BuildKit's OCI worker runs containers): run the gateway as root, or use --provider fly or exec"))
	}
	if _, err := exec.LookPath("runc"); err != nil {
		errs = append(errs, errors.New("runc not found: apt-get install runc, or run 'make deps'"))
	}
	switch fi, err := os.Stat(bin); {
	case err != nil:
		errs = append(errs, fmt.Errorf("buildkitd %s: %w: run 'make tools' to build it into bin/, or pass --buildkitd PATH", bin, err))
	case fi.IsDir() || fi.Mode().Perm()&0o111 == 0:
		errs = append(errs, fmt.Errorf("buildkitd %s is not an executable file: run 'make tools' to build it into bin/, or pass --buildkitd PATH", bin))
	}
	if len(errs) > 0 {
		return fmt.Errorf("local provider: %w", errors.Join(errs...))
	}
	return nil
}
