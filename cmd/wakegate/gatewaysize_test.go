package main

import (
	"context"
	"flag"
	"io"
	"testing"

	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/gateway"
)

func TestSoftLimitFlagTakesAuto(t *testing.T) {
	var soft int
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	softLimitVar(fs, &soft)
	if soft != gateway.DefaultPolicy.Soft {
		t.Fatalf("default %d, want %d", soft, gateway.DefaultPolicy.Soft)
	}
	if err := fs.Parse([]string{"--soft-limit", "auto"}); err != nil || soft != gateway.SoftBySize {
		t.Fatalf("auto: %d, %v", soft, err)
	}
	for _, bad := range []string{"0", "-1", "big"} {
		if err := fs.Parse([]string{"--soft-limit", bad}); err == nil {
			t.Errorf("--soft-limit %s accepted", bad)
		}
	}
	for _, tc := range []struct {
		soft, hard int
		ok         bool
	}{{1, 3, true}, {3, 3, true}, {4, 3, false}, {0, 3, false}, {gateway.SoftBySize, 1, true}, {gateway.SoftBySize, 0, false}} {
		if got := validSoftLimit(tc.soft, tc.hard); got != tc.ok {
			t.Errorf("validSoftLimit(%d, %d) = %v", tc.soft, tc.hard, got)
		}
	}
}

type statusClient struct{ cpus int }

func (c statusClient) Status(context.Context, string) (engine.Status, error) {
	return engine.Status{Ready: true, CPUs: c.cpus}, nil
}

func TestEngineCPUsReadsTheEnginesStatus(t *testing.T) {
	f := engineCPUs(statusClient{cpus: 16})
	if f == nil {
		t.Fatal("no CPU check for a client with Status")
	}
	if n, err := f(t.Context(), "tls://127.0.0.1:1"); n != 16 || err != nil {
		t.Fatalf("CPUs = %d, %v", n, err)
	}
	if engineCPUs(struct{}{}) != nil {
		t.Fatal("a CPU check for a client without Status")
	}
	if engineCPUs(&engine.Client{}) == nil {
		t.Fatal("engine.Client's status call is not used")
	}
}
