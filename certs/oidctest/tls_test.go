package oidctest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"
)

func tlsConfig() *tls.Config { return &tls.Config{RootCAs: TrustPool(), MinVersion: tls.VersionTLS12} }

func TestTrustFileRootVerifiesServer(t *testing.T) {
	iss := NewIssuer(t)
	if TrustFile() != TrustFile() {
		t.Fatal("TrustFile changes between calls")
	}
	pem, err := os.ReadFile(TrustFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", TrustFile())
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(iss.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatalf("client with TrustFile's root: %v", err)
	}
	resp.Body.Close()

	leaf := resp.TLS.PeerCertificates[0]
	if !slices.Contains(leaf.DNSNames, "localhost") ||
		!slices.ContainsFunc(leaf.IPAddresses, net.IPv4(127, 0, 0, 1).Equal) ||
		!slices.ContainsFunc(leaf.IPAddresses, net.IPv6loopback.Equal) {
		t.Errorf("server certificate names %v %v, want localhost, 127.0.0.1 and ::1", leaf.DNSNames, leaf.IPAddresses)
	}
}

func TestClientWithoutTestRootIsRefused(t *testing.T) {
	iss := NewIssuer(t)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool()}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(iss.URL + "/.well-known/jwks")
	if err == nil {
		resp.Body.Close()
		t.Fatal("a client that does not trust the test root reached the issuer")
	}
	if disc, jwks := iss.Fetches(); disc != 0 || jwks != 0 {
		t.Errorf("Fetches = %d, %d after a failed handshake", disc, jwks)
	}
}

func TestServersLeaveNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("use", func(t *testing.T) {
		iss := NewIssuer(t)
		job := iss.JobEndpoint(t, GitHubClaims("acme/widgets"))
		c := client(t)
		get(t, c, iss.URL+"/.well-known/jwks", nil)
		iss.ForeignToken(GitHubClaims("acme/widgets"))
		get(t, c, iss.Foreign().URL+"/.well-known/jwks", nil)
		req, _ := http.NewRequest("GET", job.URL+"&audience=x", nil)
		req.Header.Set("Authorization", "bearer "+job.RequestToken)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	})
	// Goroutines of closed connections end asynchronously: poll, within a
	// deadline.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
