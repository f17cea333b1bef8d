package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "version", `
Prints wakegate's module version, the VCS revision it was built from (with
"-dirty" when the tree had uncommitted changes) and the Go version. Also
'wakegate --version'.`, stdout, stderr)
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("version", "takes no arguments")
	}
	fmt.Fprintln(stdout, versionLine())
	return nil
}

// versionLine is "wakegate VERSION (REVISION[-dirty], TIME) GOVERSION" from
// the binary's build information; what the build did not record is left
// out, and a binary without any says "(devel)".
func versionLine() string {
	version, extra := "(devel)", []string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" {
			version = v
		}
		var rev, at, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			extra = append(extra, rev+dirty)
		}
		if at != "" {
			extra = append(extra, at)
		}
	}
	line := "wakegate " + version
	if len(extra) > 0 {
		line += " (" + strings.Join(extra, ", ") + ")"
	}
	return line + " " + runtime.Version()
}
