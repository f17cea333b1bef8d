package oidctest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	"go.step.sm/crypto/jose"
)

// keyPool recycles RSA keys between issuers. Generating an RSA-2048 key
// costs 60–150 ms (more under -race) and a test may need four (current,
// rotated, unpublished, foreign), so an issuer gives its keys back when it
// closes and a later one takes them. Issuers alive at the same time never
// share a key, and every key gets a fresh kid each time it is taken, so a
// verifier cannot tell a recycled key from a new one.
var keyPool struct {
	mu   sync.Mutex // guards free
	free []*rsa.PrivateKey
}

func takeKey() *rsa.PrivateKey {
	keyPool.mu.Lock()
	if n := len(keyPool.free); n > 0 {
		k := keyPool.free[n-1]
		keyPool.free = keyPool.free[:n-1]
		keyPool.mu.Unlock()
		return k
	}
	keyPool.mu.Unlock()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic("oidctest: generate RSA key: " + err.Error())
	}
	return k
}

func giveKeys(ks []*rsa.PrivateKey) {
	keyPool.mu.Lock()
	keyPool.free = append(keyPool.free, ks...)
	keyPool.mu.Unlock()
}

// signingKey is an RSA key under one kid.
type signingKey struct {
	kid  string
	priv *rsa.PrivateKey
}

func newSigningKey() signingKey {
	// GitHub's kids are 40 upper-case hex digits (a certificate
	// thumbprint); random ones look the same and never repeat.
	return signingKey{kid: strings.ToUpper(randomHex(20)), priv: takeKey()}
}

// public is the key as the JWKS publishes it.
func (k signingKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: jose.RS256, Use: "sig"}
}

// sign serializes claims (anything that marshals to a JSON object) as a
// compact RS256 JWT with header kid and typ JWT.
func (k signingKey) sign(claims any) (string, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("signer for kid %s: %w", k.kid, err)
	}
	tok, err := jose.Signed(signer).Claims(claims).CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("sign with kid %s: %w", k.kid, err)
	}
	return tok, nil
}

func (k signingKey) mustSign(claims any) string {
	tok, err := k.sign(claims)
	if err != nil {
		panic("oidctest: " + err.Error())
	}
	return tok
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails; it crashes the program instead
	return hex.EncodeToString(b)
}

// uuid is a random (version 4) UUID, the form of GitHub's jti.
func uuid() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
