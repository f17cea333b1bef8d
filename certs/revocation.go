package certs

import (
	"crypto/tls"
	"fmt"
)

// RefuseRevoked makes cfg refuse, at every handshake, a peer whose leaf
// certificate isRevoked reports revoked. smallstep's revocation is passive
// (it only blocks renewal), so every party that accepts connections checks
// it here. A failed lookup refuses too: deny by default.
func RefuseRevoked(cfg *tls.Config, isRevoked func(serial string) (bool, error)) *tls.Config {
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil // the ClientAuth policy decides about missing certificates
		}
		serial := cs.PeerCertificates[0].SerialNumber.String()
		revoked, err := isRevoked(serial)
		if err != nil {
			return fmt.Errorf("check revocation of certificate %s: %w", serial, err)
		}
		if revoked {
			return fmt.Errorf("certificate %s (%s) is revoked", serial, cs.PeerCertificates[0].Subject.CommonName)
		}
		return nil
	}
	return cfg
}
