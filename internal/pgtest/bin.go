package pgtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// debianBins is where Debian's postgresql packages put the server binaries,
// one directory per major version; they are not on PATH.
const debianBins = "/usr/lib/postgresql/*/bin"

// binaries are the server programs a cluster needs, from one installation.
type binaries struct {
	initdb, postgres string
}

// findBinaries looks for initdb and postgres side by side: first where
// postgres on PATH really lives, then in each directory matching glob,
// newest major version first. Both must come from one version: a cluster
// made by one initdb will not start under another version's postgres.
func findBinaries(lookPath func(string) (string, error), glob string) (binaries, error) {
	var dirs []string
	if p, err := lookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	versions, _ := filepath.Glob(glob) // the only error is a bad pattern
	sort.SliceStable(versions, func(i, j int) bool {
		return majorVersion(versions[i]) > majorVersion(versions[j])
	})
	dirs = append(dirs, versions...)
	for _, d := range dirs {
		b := binaries{initdb: filepath.Join(d, "initdb"), postgres: filepath.Join(d, "postgres")}
		if executable(b.initdb) && executable(b.postgres) {
			return b, nil
		}
	}
	return binaries{}, errors.New(missingMessage(glob))
}

func missingMessage(glob string) string {
	return fmt.Sprintf("pgtest: no PostgreSQL server (initdb and postgres, side by side, on PATH or in %s): run 'make deps', which installs Debian's postgresql", glob)
}

// majorVersion reads the version from /usr/lib/postgresql/VERSION/bin; 0
// when it is not a number.
func majorVersion(bindir string) int {
	n, err := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	if err != nil {
		return 0
	}
	return n
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
