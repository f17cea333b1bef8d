package certs

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"
)

// The CA directory follows step-ca's layout so that smallstep's own tools
// recognise it: public certificates under certs/, private keys under secrets/.
const (
	rootCertFile         = "certs/root_ca.crt"
	intermediateCertFile = "certs/intermediate_ca.crt"
	rootKeyFile          = "secrets/root_ca_key"
	intermediateKeyFile  = "secrets/intermediate_ca_key"
)

// Lifetimes of the CA certificates themselves; leaves are short-lived.
const (
	rootLifetime         = 10 * 365 * 24 * time.Hour
	intermediateLifetime = 10 * 365 * 24 * time.Hour
)

// ErrNotInitialized is returned by Load when the directory holds no CA.
var ErrNotInitialized = errors.New("no CA in directory (run 'wakegate certs init --ca-dir DIR' first)")

// ErrNeedPassword is returned when the CA's keys are encrypted and no
// password was given.
var ErrNeedPassword = errors.New("the CA's keys are encrypted: set WAKEGATE_CA_PASSWORD or pass --password-file")

// CA is a loaded certificate authority: the root that every party trusts,
// the intermediate that signs leaves, and the provisioners that authorize
// issuance through the embedded smallstep authority.
type CA struct {
	Dir string
	// DB is the database the CA's authority keeps its state in: "" for
	// the CA directory's own (bbolt), or a PostgreSQL URL (--ca-db).
	DB           string
	Root         *x509.Certificate
	Intermediate *x509.Certificate
	signer       crypto.Signer // the intermediate's private key
	password     []byte        // nil when the keys are stored in the clear
	Clients      *Provisioner  // authorizes client certificates (tokens)
	Servers      *Provisioner  // authorizes gateway and engine certificates
	// Admin signs wakegate's own operator requests (listing the
	// database). It is no smallstep provisioner: no token it signs can
	// get a certificate, and no CI token can pass for one.
	Admin *Provisioner
	// Reencrypted names the key files (relative to Dir) that Load found
	// in the legacy PEM encryption and rewrote as PKCS#8 with PBKDF2.
	Reencrypted []string
}

// Init creates a root and an intermediate CA in dir, and the provisioner
// keys that authorize issuance. With a password every private key is stored
// encrypted with it; nil stores them in the clear (for demos and tests). It
// refuses to overwrite an existing CA, since that would orphan every
// certificate it issued.
func Init(dir, name string, password []byte) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, rootCertFile)); err == nil {
		return nil, fmt.Errorf("init CA in %s: a CA already exists there; remove it or use another --ca-dir", dir)
	}
	for _, sub := range []string{"certs", "secrets", "db"} {
		perm := os.FileMode(0o755)
		if sub != "certs" {
			perm = 0o700
		}
		if err := os.MkdirAll(filepath.Join(dir, sub), perm); err != nil {
			return nil, fmt.Errorf("init CA in %s: %w", dir, err)
		}
	}
	rootKey, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return nil, fmt.Errorf("generate root key: %w", err)
	}
	root, err := sign(x509util.DefaultRootTemplate, name+" Root CA", rootKey.Public(), nil, rootKey, rootLifetime)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	intKey, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return nil, fmt.Errorf("generate intermediate key: %w", err)
	}
	intermediate, err := sign(x509util.DefaultIntermediateTemplate, name+" Intermediate CA", intKey.Public(), root, rootKey, intermediateLifetime)
	if err != nil {
		return nil, fmt.Errorf("create intermediate certificate: %w", err)
	}
	if err := writeFile(filepath.Join(dir, rootCertFile), encodeCerts(root), 0o644); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, intermediateCertFile), encodeCerts(intermediate), 0o644); err != nil {
		return nil, err
	}
	if err := writeKey(filepath.Join(dir, rootKeyFile), rootKey, password); err != nil {
		return nil, err
	}
	if err := writeKey(filepath.Join(dir, intermediateKeyFile), intKey, password); err != nil {
		return nil, err
	}
	ca := &CA{Dir: dir, Root: root, Intermediate: intermediate, signer: intKey, password: password}
	if ca.Clients, err = newProvisioner(dir, clientsProvisioner, password); err != nil {
		return nil, err
	}
	if ca.Servers, err = newProvisioner(dir, serversProvisioner, password); err != nil {
		return nil, err
	}
	if ca.Admin, err = newProvisioner(dir, operatorKey, password); err != nil {
		return nil, err
	}
	return ca, nil
}

// Load reads the CA in dir: both certificates, the intermediate's key and the
// provisioners, decrypting keys with password when they are encrypted. Keys
// still in the legacy PEM encryption are rewritten as PKCS#8 (see
// reencryptLegacyKeys).
func Load(dir string, password []byte) (*CA, error) {
	root, err := pemutil.ReadCertificate(filepath.Join(dir, rootCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load CA from %s: %w", dir, ErrNotInitialized)
	}
	if err != nil {
		return nil, fmt.Errorf("load CA root from %s: %w", dir, err)
	}
	intermediate, err := pemutil.ReadCertificate(filepath.Join(dir, intermediateCertFile))
	if err != nil {
		return nil, fmt.Errorf("load CA intermediate from %s: %w", dir, err)
	}
	key, err := readKey(filepath.Join(dir, intermediateKeyFile), password)
	if err != nil {
		return nil, fmt.Errorf("load CA intermediate key from %s: %w", dir, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("load CA intermediate key from %s: %T is not a signing key", dir, key)
	}
	ca := &CA{Dir: dir, Root: root, Intermediate: intermediate, signer: signer, password: password}
	// The intermediate's key decrypted, so the password is right: CAs made
	// before keys were PKCS#8 are rewritten now.
	if password != nil {
		if ca.Reencrypted, err = reencryptLegacyKeys(dir, password); err != nil {
			return nil, fmt.Errorf("load CA from %s: %w", dir, err)
		}
	}
	if ca.Clients, err = loadProvisioner(dir, clientsProvisioner, password); err != nil {
		return nil, err
	}
	if ca.Servers, err = loadProvisioner(dir, serversProvisioner, password); err != nil {
		return nil, err
	}
	// CAs made before the operator key existed get one now.
	ca.Admin, err = loadProvisioner(dir, operatorKey, password)
	if errors.Is(err, os.ErrNotExist) {
		ca.Admin, err = newProvisioner(dir, operatorKey, password)
	}
	if err != nil {
		return nil, err
	}
	return ca, nil
}

// Fingerprint is the SHA-256 fingerprint of the root, as hex.
func (ca *CA) Fingerprint() string { return x509util.Fingerprint(ca.Root) }

// sign creates a certificate for pub from a smallstep template. A nil parent
// makes it self-signed.
func sign(tmpl, commonName string, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer, life time.Duration) (*x509.Certificate, error) {
	return signWithData(tmpl, x509util.CreateTemplateData(commonName, nil), pub, parent, parentKey, life)
}

func signWithData(tmpl string, data x509util.TemplateData, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer, life time.Duration) (*x509.Certificate, error) {
	c, err := x509util.NewCertificateFromX509(&x509.Certificate{PublicKey: pub}, x509util.WithTemplate(tmpl, data))
	if err != nil {
		return nil, err
	}
	t := c.GetCertificate()
	// Backdate a little: a freshly resumed machine's clock can lag by seconds.
	now := time.Now()
	t.NotBefore = now.Add(-time.Minute)
	t.NotAfter = now.Add(life)
	if parent == nil {
		parent = t
	}
	return x509util.CreateCertificate(t, parent, pub, parentKey)
}

func encodeCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// writeFile writes atomically (temp file, then rename) with perm, so a crash
// never leaves a half-written key or a key with loose permissions.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	certs, err := pemutil.ReadCertificateBundle(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return certs, nil
}

// RootFingerprint reads only the root certificate in dir (no keys, no
// password) and returns its SHA-256 fingerprint.
func RootFingerprint(dir string) (string, error) {
	root, err := pemutil.ReadCertificate(filepath.Join(dir, rootCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read CA root from %s: %w", dir, ErrNotInitialized)
	}
	if err != nil {
		return "", fmt.Errorf("read CA root from %s: %w", dir, err)
	}
	return x509util.Fingerprint(root), nil
}
