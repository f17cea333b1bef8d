package connect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

func TestClassifyMarksCertificateFailuresRefused(t *testing.T) {
	verifyErr := &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}
	alertErr := &net.OpError{Op: "remote error", Net: "tcp", Err: errors.New("tls: certificate required")}
	tests := []struct {
		name    string
		err     error
		refused bool
	}{
		{"gateway certificate did not verify", fmt.Errorf("connect to gateway gw:443: %w", verifyErr), true},
		{"bare verification error", verifyErr, true},
		{"gateway sent a TLS alert", fmt.Errorf("wake request to gw:443: %w", alertErr), true},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, false},
		{"local TLS error", &net.OpError{Op: "local error", Net: "tcp", Err: errors.New("tls: bad record MAC")}, false},
		{"read error", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, false},
		{"timeout", fmt.Errorf("connect: %w", context.DeadlineExceeded), false},
		{"eof", io.EOF, false},
		{"plain error", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify(tt.err)
			if refused := errors.Is(got, ErrRefused); refused != tt.refused {
				t.Fatalf("classify(%v) = %v; refused %v, want %v", tt.err, got, refused, tt.refused)
			}
			if !tt.refused {
				if got != tt.err {
					t.Fatalf("classify changed an error it should leave alone: %v -> %v", tt.err, got)
				}
				return
			}
			// The cause stays inspectable behind the refusal.
			if !errors.Is(got, tt.err) {
				t.Fatalf("classify(%v) = %v, which no longer wraps the cause", tt.err, got)
			}
		})
	}
	if classify(nil) != nil {
		t.Fatalf("classify(nil) is not nil")
	}
}

// TestClassifyRefusesRealCertificateFailures checks classify against the
// errors crypto/tls really returns: a gateway whose certificate does not
// verify, and a gateway that rejects the client's certificate (in TLS 1.3 the
// client hears of that as an alert on its first read).
func TestClassifyRefusesRealCertificateFailures(t *testing.T) {
	gwCA, err := certs.Init(t.TempDir(), "Gateway", nil)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := certs.Init(t.TempDir(), "Other", nil)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *certs.CA, kind certs.Kind, name string) func() *tls.Certificate {
		l, err := ca.Issue(kind, name, []string{"127.0.0.1", "localhost"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c := l.TLSCertificate()
		return func() *tls.Certificate { return c }
	}
	server := certs.ServerTLS(issue(gwCA, certs.Server, "localhost"), gwCA.Pool())

	tests := []struct {
		name   string
		client *tls.Config
		says   string
	}{
		{"client does not trust the gateway", certs.ClientTLS(issue(gwCA, certs.Client, "job"), otherCA.Pool(), "localhost"),
			"the gateway's certificate is not from this client's CA"},
		{"gateway does not trust the client", certs.ClientTLS(issue(otherCA, certs.Client, "job"), gwCA.Pool(), "localhost"),
			"the gateway rejected this client's certificate"},
		{"the gateway's certificate does not name the address", certs.ClientTLS(issue(gwCA, certs.Client, "job"), gwCA.Pool(), "gateway.example.com"),
			`does not name "gateway.example.com" (it names localhost, 127.0.0.1): connect with --server-name and one of those names, or start the gateway with --san gateway.example.com`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			served := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					served <- err
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				served <- c.(*tls.Conn).Handshake()
			}()

			err = func() error {
				d := tls.Dialer{Config: tt.client}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				_, err = c.Read(make([]byte, 1))
				return err
			}()
			if serr := <-served; serr == nil {
				t.Errorf("gateway accepted the handshake")
			}
			if err == nil {
				t.Fatalf("client saw no failure")
			}
			got := classify(err)
			if !errors.Is(got, ErrRefused) {
				t.Fatalf("classify(%v) = %v; want a refusal", err, got)
			}
			if !strings.Contains(got.Error(), tt.says) {
				t.Fatalf("classify(%v) = %q; want it to say %q", err, got, tt.says)
			}
		})
	}
}
