package main

import (
	"strings"
	"testing"
)

func TestBadFlagsMaxConnsPerIdentityMustBePositive(t *testing.T) {
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	for _, v := range []string{"0", "-1"} {
		out := newLogWatch()
		err := run(t.Context(), []string{"gateway", "--ca-dir", "ca", "--state", "s", "--max-conns-per-identity", v}, out, out)
		if err == nil || !strings.Contains(err.Error(), "--max-conns-per-identity must be at least 1") {
			t.Errorf("--max-conns-per-identity %s = %v, want a usage error", v, err)
		}
	}
}

func TestHelpDescribesMaxConnsPerIdentity(t *testing.T) {
	out := newLogWatch()
	if err := run(t.Context(), []string{"gateway", "-h"}, out, out); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "max-conns-per-identity") || !strings.Contains(s, "256") {
		t.Fatalf("gateway help does not describe --max-conns-per-identity and its default:\n%s", s)
	}
}

func TestBadFlagsEngineAheadIsBounded(t *testing.T) {
	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	for _, v := range []string{"-1", "17"} {
		out := newLogWatch()
		err := run(t.Context(), []string{"gateway", "--ca-dir", "ca", "--state", "s", "--engine-ahead", v}, out, out)
		if err == nil || !strings.Contains(err.Error(), "--engine-ahead must be between 0 and 16") {
			t.Errorf("--engine-ahead %s = %v, want a usage error", v, err)
		}
	}
}
