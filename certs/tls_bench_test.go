package certs_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// BenchmarkHandshake is one mTLS connection set up over loopback, both ends
// in this process, as the gateway and connect (or an engine) make it: a
// full handshake signs and verifies certificates both ways; a resumed one
// does neither. The server checks revocation either way.
func BenchmarkHandshake(b *testing.B) {
	for _, bc := range []struct {
		name   string
		resume bool
	}{{"full", false}, {"resumed", true}} {
		b.Run(bc.name, func(b *testing.B) {
			ca, err := certs.Init(b.TempDir(), "Bench", nil)
			if err != nil {
				b.Fatal(err)
			}
			srvLeaf, err := ca.Issue(certs.Server, "localhost", []string{"127.0.0.1", "localhost"}, time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			cliLeaf, err := ca.Issue(certs.Client, "bench", nil, time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			srv := certs.RefuseRevoked(certs.ServerTLS(fixed(srvLeaf.TLSCertificate()), ca.Pool()),
				func(string) (bool, error) { return false, nil })
			cli := certs.ClientTLS(fixed(cliLeaf.TLSCertificate()), ca.Pool(), "localhost")
			if !bc.resume {
				cli.ClientSessionCache = nil
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			served := make(chan struct{})
			go func() {
				defer close(served)
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					tc := tls.Server(c, srv)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					if tc.HandshakeContext(ctx) == nil {
						tc.Write([]byte{1}) // the ticket goes out before this byte
					}
					cancel()
					tc.Close()
				}
			}()
			resumed := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c, err := tls.Dial("tcp", ln.Addr().String(), cli)
				if err != nil {
					b.Fatal(err)
				}
				// Reading the server's byte takes in its session ticket.
				if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
					b.Fatal(err)
				}
				resumed += boolInt(c.ConnectionState().DidResume)
				c.Close()
			}
			b.StopTimer()
			ln.Close()
			<-served
			// All but the first connection of a resuming run resume.
			if want := boolInt(bc.resume) * (b.N - 1); resumed < want {
				b.Fatalf("%d of %d handshakes resumed, want %d", resumed, b.N, want)
			}
		})
	}
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}
