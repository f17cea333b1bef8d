//go:build !unix

package connect

import "crypto/tls"

// stillOpen cannot peek at a socket here: a spare is taken as open, and one the
// gateway closed fails its client's connection.
func stillOpen(*tls.Conn) bool { return true }
