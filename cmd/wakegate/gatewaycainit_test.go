package main

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wakegate/wakegate/certs"
)

// TestCAInitCreatesACAOnceAndNeverReplacesIt: --ca-init makes the CA in an
// empty --ca-dir with the CA password and logs its fingerprint; a second
// start keeps that CA; without a password, or without --ca-init, it makes
// none.
func TestCAInitCreatesACAOnceAndNeverReplacesIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	t.Setenv("WAKEGATE_CA_PASSWORD", "")
	if err := (&caFlags{dir: dir}).initIfMissing(log); err != nil {
		t.Fatalf("without --ca-init: %v", err)
	}
	if err := (&caFlags{dir: dir, create: true}).initIfMissing(log); err == nil || !strings.Contains(err.Error(), "WAKEGATE_CA_PASSWORD") {
		t.Fatalf("--ca-init without a password = %v, want it to ask for one", err)
	}
	if _, err := certs.RootFingerprint(dir); err == nil {
		t.Fatal("a CA was made without --ca-init or without a password")
	}

	t.Setenv("WAKEGATE_CA_PASSWORD", "s3cret-pw")
	c := &caFlags{dir: dir, create: true}
	if err := c.initIfMissing(log); err != nil {
		t.Fatal(err)
	}
	fp, err := certs.RootFingerprint(dir)
	if err != nil {
		t.Fatalf("--ca-init made no CA: %v", err)
	}
	if !strings.Contains(logs.String(), "root_fingerprint="+fp) {
		t.Errorf("the log does not give the root fingerprint %s:\n%s", fp, &logs)
	}
	if strings.Contains(logs.String(), "s3cret-pw") {
		t.Errorf("the log holds the CA password:\n%s", &logs)
	}
	if _, err := certs.Load(dir, []byte("s3cret-pw")); err != nil {
		t.Errorf("the CA does not open with the password: %v", err)
	}
	if err := c.initIfMissing(log); err != nil {
		t.Fatal(err)
	}
	if again, _ := certs.RootFingerprint(dir); again != fp {
		t.Fatalf("a second start replaced the CA: %s, was %s", again, fp)
	}
}

func TestCAInitRefusesASharedDatabase(t *testing.T) {
	var out bytes.Buffer
	err := run(t.Context(), []string{"gateway", "--ca-dir", t.TempDir(), "--state", t.TempDir(), "--ca-init",
		"--ca-db", "postgresql://wakegate@127.0.0.1:5432/wakegate"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "--ca-init makes a CA of this gateway's own") {
		t.Fatalf("--ca-init with --ca-db = %v, want a refusal", err)
	}
}
