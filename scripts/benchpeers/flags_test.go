package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFlagsAreTheToolsOwnAndSayWhatIsWrong(t *testing.T) {
	o, err := parseFlags([]string{"-echo", "/bin/echo", "-idle", "100, 200", "-bulk", "1s"})
	if err != nil || o.echo != "/bin/echo" || len(o.idle) != 2 || o.idle[1] != 200 || o.bulk != time.Second || o.rounds != 3 {
		t.Fatalf("parseFlags = %+v, %v; want the given values and the defaults", o, err)
	}
	var usage errUsage
	for _, tc := range []struct {
		args []string
		help bool
	}{
		{[]string{"-h"}, true},
		{[]string{"-rounds", "x"}, false},
		// glog's flags, registered by an imported package on the default
		// flag set, are not this tool's.
		{[]string{"-logtostderr"}, false},
	} {
		_, err := parseFlags(tc.args)
		if !errors.As(err, &usage) || usage.help != tc.help {
			t.Errorf("parseFlags(%q) = %v, want a usage error (help %v)", tc.args, err, tc.help)
		}
	}
	for args, want := range map[string]string{
		"-rounds 0 -echo e":  "-rounds 0: want at least 1",
		"-paced 0 -echo e":   "-paced 0: want at least 1",
		"-bulk 0s -echo e":   "-bulk 0s: want a positive time",
		"-idle 10,x -echo e": `-idle "10,x": want positive counts`,
		"":                   "-echo is required",
	} {
		_, err := parseFlags(strings.Fields(args))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseFlags(%q) = %v, want %q", args, err, want)
		}
	}
}
