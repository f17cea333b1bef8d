package certs

import (
	"crypto"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.step.sm/crypto/pemutil"
)

// Private keys on disk are PEM. With a password they are PKCS#8
// "ENCRYPTED PRIVATE KEY" blocks (PBES2: PBKDF2-HMAC-SHA256 with
// pemutil.PBKDF2Iterations, 600,000, and a 16-byte salt; AES-256-CBC),
// which smallstep's authority reads as well. CAs made before were written
// in the legacy encryption of RFC 1423 ("Proc-Type: 4,ENCRYPTED"), whose
// key is one MD5 round over the password and salt: cheap enough to try
// millions of passwords a second. Load rewrites those.

// keyFormat is how a private key file is stored.
type keyFormat int

const (
	keyClear  keyFormat = iota // unencrypted
	keyPKCS8                   // "ENCRYPTED PRIVATE KEY": PBES2 with PBKDF2
	keyLegacy                  // "Proc-Type: 4,ENCRYPTED": one MD5 round
)

func formatOf(block *pem.Block) keyFormat {
	switch {
	case block.Headers["Proc-Type"] == "4,ENCRYPTED":
		return keyLegacy
	case block.Type == "ENCRYPTED PRIVATE KEY":
		return keyPKCS8
	}
	return keyClear
}

// encodeKey serializes key as PEM: PKCS#8 encrypted with password, or in the
// clear when password is nil.
func encodeKey(key crypto.Signer, password []byte) ([]byte, error) {
	var opts []pemutil.Options
	if password != nil {
		opts = append(opts, pemutil.WithPKCS8(true), pemutil.WithPassword(password))
	}
	block, err := pemutil.Serialize(key, opts...)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(block), nil
}

// writeKey writes a private key readable by its owner only (0600),
// encrypted with password unless it is nil.
func writeKey(path string, key crypto.Signer, password []byte) error {
	data, err := encodeKey(key, password)
	if err != nil {
		return err
	}
	return writeFile(path, data, 0o600)
}

// readKey reads a PEM private key, decrypting it with password when it is
// encrypted (in either format).
func readKey(path string, password []byte) (any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM data", path)
	}
	if formatOf(block) == keyClear {
		return pemutil.ParseKey(data)
	}
	if password == nil {
		return nil, ErrNeedPassword
	}
	key, err := pemutil.ParseKey(data, pemutil.WithPassword(password))
	if err != nil {
		return nil, fmt.Errorf("decrypt %s: wrong password? %w", path, err)
	}
	return key, nil
}

// reencryptLegacyKeys rewrites, as PKCS#8 with PBKDF2, the CA's private keys
// in dir still in the legacy encryption — the root's (when it is not kept
// offline), the intermediate's and those of intermediates kept by
// rotate-intermediate — and returns the files it rewrote, relative to dir.
// Each is decrypted first, so a wrong password changes nothing, and
// replaced atomically (0600).
func reencryptLegacyKeys(dir string, password []byte) ([]string, error) {
	files := []string{rootKeyFile, intermediateKeyFile}
	kept, err := filepath.Glob(filepath.Join(dir, intermediateKeyFile+".*"))
	if err != nil {
		return nil, err
	}
	for _, k := range kept {
		rel, err := filepath.Rel(dir, k)
		if err != nil {
			return nil, err
		}
		files = append(files, rel)
	}
	var done []string
	for _, f := range files {
		path := filepath.Join(dir, f)
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // a root key kept offline
		}
		if err != nil {
			return done, fmt.Errorf("re-encrypt %s: %w", f, err)
		}
		// Only the header is looked at: decrypting a PKCS#8 key again
		// would cost its 600,000 rounds on every load.
		if block, _ := pem.Decode(data); block == nil || formatOf(block) != keyLegacy {
			continue
		}
		key, err := readKey(path, password)
		if err != nil {
			return done, fmt.Errorf("re-encrypt %s: %w", f, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return done, fmt.Errorf("re-encrypt %s: %T is not a signing key", f, key)
		}
		if err := writeKey(path, signer, password); err != nil {
			return done, fmt.Errorf("re-encrypt %s: %w", f, err)
		}
		done = append(done, f)
	}
	return done, nil
}
