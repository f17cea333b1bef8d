package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/wakegate/wakegate/certs"
)

// initIfMissing creates the CA in the --ca-dir of a gateway started with
// --ca-init when that directory holds none, as 'certs init' does, and logs
// its root fingerprint (not a secret: clients pin it). A platform that
// gives the gateway a fresh volume and no shell before its first start
// (Fly: 'fly ssh' needs a running machine) gets its CA this way.
func (c *caFlags) initIfMissing(log *slog.Logger) error {
	if !c.create {
		return nil
	}
	_, err := certs.RootFingerprint(c.dir)
	if err == nil {
		return nil // there is one: never replaced
	}
	if !errors.Is(err, certs.ErrNotInitialized) {
		return fmt.Errorf("--ca-init: %w", err)
	}
	password, err := caPassword(c.passwordFile)
	if err != nil {
		return err
	}
	if password == nil {
		return usageError("gateway", "--ca-init: the CA's keys need a password: set WAKEGATE_CA_PASSWORD or --password-file")
	}
	ca, err := certs.Init(c.dir, "wakegate", password)
	if err != nil {
		return fmt.Errorf("--ca-init: %w", err)
	}
	log.Info("created the CA (--ca-init)", "ca_dir", c.dir, "root_fingerprint", ca.Fingerprint())
	return nil
}
