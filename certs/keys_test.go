package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// pemBlock reads the one PEM block of a key file in a CA directory.
func pemBlock(t *testing.T, dir, file string) *pem.Block {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM block", file)
	}
	return block
}

// pbkdf2Iterations reads the PBES2 parameters of a PKCS#8 encrypted key
// (RFC 8018): the key derivation must be PBKDF2, and it returns its
// iteration count.
func pbkdf2Iterations(t *testing.T, der []byte) int {
	t.Helper()
	var info struct {
		Algo struct {
			Algorithm asn1.ObjectIdentifier
			Params    struct {
				KDF struct {
					Algorithm asn1.ObjectIdentifier
					Params    struct {
						Salt       []byte
						Iterations int
					}
				}
				Enc asn1.RawValue
			}
		}
		Data []byte
	}
	if _, err := asn1.Unmarshal(der, &info); err != nil {
		t.Fatalf("not an EncryptedPrivateKeyInfo: %v", err)
	}
	pbes2 := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	pbkdf2 := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	if !info.Algo.Algorithm.Equal(pbes2) || !info.Algo.Params.KDF.Algorithm.Equal(pbkdf2) {
		t.Fatalf("encryption %v with key derivation %v, want PBES2 (%v) with PBKDF2 (%v)",
			info.Algo.Algorithm, info.Algo.Params.KDF.Algorithm, pbes2, pbkdf2)
	}
	if n := len(info.Algo.Params.KDF.Params.Salt); n < 16 {
		t.Errorf("PBKDF2 salt of %d bytes, want at least 16", n)
	}
	return info.Algo.Params.KDF.Params.Iterations
}

// TestInitEncryptsKeysAsPKCS8WithPBKDF2: CA keys used to be written in the
// legacy PEM encryption (one MD5 round over the password).
func TestInitEncryptsKeysAsPKCS8WithPBKDF2(t *testing.T) {
	t.Parallel()
	c, err := Init(t.TempDir(), "pkcs8", []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{rootKeyFile, intermediateKeyFile} {
		block := pemBlock(t, c.Dir, f)
		if block.Type != "ENCRYPTED PRIVATE KEY" || len(block.Headers) != 0 {
			t.Fatalf("%s is a %q block with headers %v, want ENCRYPTED PRIVATE KEY (PKCS#8) and no headers", f, block.Type, block.Headers)
		}
		if n := pbkdf2Iterations(t, block.Bytes); n < 600_000 {
			t.Errorf("%s: PBKDF2 with %d iterations, want at least 600,000", f, n)
		}
	}
	if _, err := Load(c.Dir, []byte("s3cret")); err != nil {
		t.Fatalf("Load: %v", err)
	}
}

// writeLegacyKey writes key to a file of dir in the legacy PEM encryption,
// as CAs made before PKCS#8 hold their keys.
func writeLegacyKey(t *testing.T, dir, file string, key crypto.Signer, password []byte) {
	t.Helper()
	ec, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	block, err := x509.EncryptPEMBlock(rand.Reader, "EC PRIVATE KEY", ec, password, x509.PEMCipherAES256) //nolint:staticcheck // the legacy format under test
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLegacyEncryptedKeysAreReencryptedOnLoad(t *testing.T) {
	t.Parallel()
	pw := []byte("s3cret")
	c, err := Init(t.TempDir(), "legacy", pw)
	if err != nil {
		t.Fatal(err)
	}
	// Every PBKDF2 derivation costs seconds under the race detector: the
	// root key is decrypted once, the intermediate's is at hand.
	rk, err := readKey(filepath.Join(c.Dir, rootKeyFile), pw)
	if err != nil {
		t.Fatal(err)
	}
	// kept is an intermediate kept by rotate-intermediate, as an older CA
	// has it.
	kept := intermediateKeyFile + ".1f"
	keys := map[string]crypto.Signer{rootKeyFile: rk.(crypto.Signer), intermediateKeyFile: c.signer, kept: c.signer}
	files := []string{rootKeyFile, intermediateKeyFile, kept}
	for _, f := range files {
		writeLegacyKey(t, c.Dir, f, keys[f], pw)
	}
	legacy := func(f string) bool { return pemBlock(t, c.Dir, f).Headers["Proc-Type"] == "4,ENCRYPTED" }

	t.Run("a wrong password fails clearly and rewrites nothing", func(t *testing.T) {
		if _, err := Load(c.Dir, []byte("wrong")); err == nil || !strings.Contains(err.Error(), "wrong password") {
			t.Fatalf("Load with a wrong password = %v, want an error saying the password may be wrong", err)
		}
		if _, err := Load(c.Dir, nil); !errors.Is(err, ErrNeedPassword) {
			t.Fatalf("Load without a password = %v, want ErrNeedPassword", err)
		}
		for _, f := range files {
			if !legacy(f) {
				t.Errorf("%s was rewritten by a failed Load", f)
			}
		}
	})

	t.Run("the right password rewrites every legacy key as PKCS#8", func(t *testing.T) {
		loaded, err := Load(c.Dir, pw)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		slices.Sort(loaded.Reencrypted)
		want := slices.Sorted(slices.Values(files))
		if !slices.Equal(loaded.Reencrypted, want) {
			t.Errorf("Reencrypted = %v, want %v", loaded.Reencrypted, want)
		}
		for _, f := range files {
			block := pemBlock(t, c.Dir, f)
			if block.Type != "ENCRYPTED PRIVATE KEY" || len(block.Headers) != 0 {
				t.Errorf("%s after Load is a %q block with headers %v, want ENCRYPTED PRIVATE KEY", f, block.Type, block.Headers)
			}
			if n := pbkdf2Iterations(t, block.Bytes); n < 600_000 {
				t.Errorf("%s: PBKDF2 with %d iterations, want at least 600,000", f, n)
			}
			if fi, err := os.Stat(filepath.Join(c.Dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s after the rewrite: %v, %v; want mode 0600", f, err, fi)
			}
			if f == intermediateKeyFile {
				if !loaded.signer.Public().(*ecdsa.PublicKey).Equal(c.signer.Public()) {
					t.Errorf("%s holds another key after the rewrite", f)
				}
				continue
			}
			k, err := readKey(filepath.Join(c.Dir, f), pw)
			if err != nil {
				t.Fatalf("%s after the rewrite: %v", f, err)
			}
			if !k.(*ecdsa.PrivateKey).Equal(keys[f]) {
				t.Errorf("%s holds another key after the rewrite", f)
			}
		}
		entries, _ := os.ReadDir(filepath.Join(c.Dir, "secrets"))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("leftover temporary file secrets/%s", e.Name())
			}
		}
	})

	t.Run("the rewritten CA loads, still needs its password and issues", func(t *testing.T) {
		if _, err := Load(c.Dir, []byte("wrong")); err == nil || !strings.Contains(err.Error(), "wrong password") {
			t.Fatalf("Load with a wrong password = %v, want an error saying the password may be wrong", err)
		}
		again, err := Load(c.Dir, pw)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if len(again.Reencrypted) != 0 {
			t.Errorf("a second Load rewrote %v again", again.Reencrypted)
		}
		a, err := again.OpenAuthority(AuthorityConfig{})
		if err != nil {
			t.Fatalf("open the authority on the rewritten keys: %v", err)
		}
		defer a.Close()
		leaf, err := a.Issue(t.Context(), Client, "after", nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := leaf.Cert.CheckSignatureFrom(c.Intermediate); err != nil {
			t.Errorf("a leaf issued after the rewrite is not signed by the same intermediate: %v", err)
		}
	})
}

// TestUnencryptedCAKeepsWorking: a CA made with --no-password is neither
// refused nor rewritten.
func TestUnencryptedCAKeepsWorking(t *testing.T) {
	c, err := Init(t.TempDir(), "clear", nil)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string][]byte{}
	for _, f := range []string{rootKeyFile, intermediateKeyFile} {
		if b := pemBlock(t, c.Dir, f); len(b.Headers) != 0 || strings.Contains(b.Type, "ENCRYPTED") {
			t.Fatalf("%s of a CA without a password is encrypted (%q, %v)", f, b.Type, b.Headers)
		}
		before[f], _ = os.ReadFile(filepath.Join(c.Dir, f))
	}
	loaded, err := Load(c.Dir, nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for f, b := range before {
		if after, _ := os.ReadFile(filepath.Join(c.Dir, f)); !bytes.Equal(after, b) {
			t.Errorf("%s changed on Load", f)
		}
	}
	a, err := loaded.OpenAuthority(AuthorityConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Issue(t.Context(), Client, "clear", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
}
