package certs

import (
	"crypto"
	"fmt"
	"os"
	"path/filepath"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"
)

// RotateIntermediate replaces the intermediate CA with a new one signed by
// the same root, keeping the old certificate and key beside it (suffixed
// with the old serial). Every party trusts the root, and every leaf carries
// the intermediate that signed it, so certificates issued before the
// rotation keep verifying until they expire, while new issuance and
// renewals use the new intermediate once the gateway restarts. It returns
// the new CA.
func RotateIntermediate(dir, name string, password []byte) (*CA, error) {
	old, err := Load(dir, password)
	if err != nil {
		return nil, err
	}
	rk, err := readKey(filepath.Join(dir, rootKeyFile), password)
	if err != nil {
		return nil, fmt.Errorf("rotate intermediate: root key: %w", err)
	}
	rootKey, ok := rk.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("rotate intermediate: root key %T cannot sign", rk)
	}
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return nil, fmt.Errorf("rotate intermediate: generate key: %w", err)
	}
	cert, err := sign(x509util.DefaultIntermediateTemplate, name+" Intermediate CA", key.Public(), old.Root, rootKey, intermediateLifetime)
	if err != nil {
		return nil, fmt.Errorf("rotate intermediate: %w", err)
	}
	suffix := "." + old.Intermediate.SerialNumber.Text(16)
	for _, f := range []string{intermediateCertFile, intermediateKeyFile} {
		p := filepath.Join(dir, f)
		if err := os.Link(p, p+suffix); err != nil {
			return nil, fmt.Errorf("rotate intermediate: keep the old %s: %w", f, err)
		}
	}
	if err := writeKey(filepath.Join(dir, intermediateKeyFile), key, password); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, intermediateCertFile), encodeCerts(cert), 0o644); err != nil {
		return nil, err
	}
	return Load(dir, password)
}
