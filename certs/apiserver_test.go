package certs

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// servedAPI serves a fresh authority's API through NewAPIServer with
// limits, on loopback; it returns the authority and the API's address.
func servedAPI(t *testing.T, limits APILimits) (*Authority, string) {
	t.Helper()
	return servedAPIWith(t, nil, limits)
}

// servedAPIWith is servedAPI for a CA whose keys are encrypted with password
// (nil: in the clear).
func servedAPIWith(t *testing.T, password []byte, limits APILimits) (*Authority, string) {
	t.Helper()
	c, err := Init(t.TempDir(), "test", password)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.OpenAuthority(AuthorityConfig{Address: ln.Addr().String(), DNSNames: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := a.Issue(t.Context(), Server, "ca", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := a.NewAPIServer(leaf.TLSCertificate, limits, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		a.Close()
	})
	return a, ln.Addr().String()
}

func apiClient(a *Authority) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: a.CA().Pool()}}}
}

func dialAPI(t *testing.T, a *Authority, addr string) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: a.CA().Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// countingZeros is an endless body that counts what was read of it.
type countingZeros struct {
	n, limit int64
	read     atomic.Int64
}

func (z *countingZeros) Read(p []byte) (int, error) {
	if z.n >= z.limit {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), z.limit-z.n))
	clear(p[:k])
	z.n += int64(k)
	z.read.Add(int64(k))
	return k, nil
}

// TestHugeBodiesAreRefusedWith413WithoutBeingRead: a 512 MiB POST once
// drove the gateway from 67 MB to 3.1 GB. Every route now stops reading at
// the limit and answers 413, whether the size is declared or streamed.
func TestHugeBodiesAreRefusedWith413WithoutBeingRead(t *testing.T) {
	a, addr := servedAPI(t, APILimits{})
	client := apiClient(a)
	for _, tc := range []struct {
		path     string
		declared bool
	}{
		{"/1.0/sign", true}, {"/1.0/sign", false}, {"/sign", false}, {"/1.0/revoke", false}, {"/renew", true}, {"/wakegate/v1/anything", false},
	} {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		body := &countingZeros{limit: 512 << 20}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://"+addr+tc.path, body)
		if err != nil {
			t.Fatal(err)
		}
		if tc.declared {
			req.ContentLength = body.limit
		}
		resp, err := client.Do(req)
		switch {
		case err == nil:
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("POST %s (512 MiB, declared %v) = %s, want 413", tc.path, tc.declared, resp.Status)
			}
		case !errors.Is(err, io.ErrClosedPipe) && !strings.Contains(err.Error(), "broken pipe") && !strings.Contains(err.Error(), "connection reset"):
			// The server may close before the client finished writing.
			t.Errorf("POST %s: %v", tc.path, err)
		}
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if sent := body.read.Load(); sent > 64<<20 {
			t.Errorf("POST %s: the client got to send %d MiB before the server gave up", tc.path, sent>>20)
		}
		if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 32<<20 {
			t.Errorf("POST %s: heap grew by %d MiB", tc.path, grew>>20)
		}
	}
}

// TestIdleKeepAliveConnectionsAreClosed: 1,000 idle keep-alive connections
// were still open after 60 s.
func TestIdleKeepAliveConnectionsAreClosed(t *testing.T) {
	a, addr := servedAPI(t, APILimits{IdleTimeout: 200 * time.Millisecond})
	c := dialAPI(t, a, addr)
	if _, err := io.WriteString(c, "GET /roots HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err == nil || errors.Is(err, net.ErrClosed) || isTimeout(err) {
		t.Fatalf("an idle keep-alive connection read %v, want the server to close it", err)
	}
}

// TestSlowBodiesAreCut: a body that trickles in is cut at ReadTimeout.
func TestSlowBodiesAreCut(t *testing.T) {
	a, addr := servedAPI(t, APILimits{ReadTimeout: 300 * time.Millisecond})
	c := dialAPI(t, a, addr)
	if _, err := io.WriteString(c, "POST /1.0/sign HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{\"csr\""); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if isTimeout(err) {
		t.Fatal("the server still waited for a stalled body after 10 s")
	}
	if strings.Contains(string(b), "200 OK") {
		t.Fatalf("a stalled body got a success: %q", b)
	}
}

// TestConnectionsBeyondTheCapWaitForASlot: connections beyond MaxConns wait
// in the backlog and take no descriptor until one closes.
func TestConnectionsBeyondTheCapWaitForASlot(t *testing.T) {
	const limit = 4
	a, addr := servedAPI(t, APILimits{MaxConns: limit})
	held := make([]*tls.Conn, limit)
	for i := range held {
		held[i] = dialAPI(t, a, addr)
	}
	cfg := &tls.Config{RootCAs: a.CA().Pool(), ServerName: "127.0.0.1"}
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 300 * time.Millisecond}, "tcp", addr, cfg); err == nil {
		c.Close()
		t.Fatalf("a connection beyond the cap of %d was served", limit)
	}
	held[0].Close()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("a connection after one closed: %v", err)
	}
	c.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestDescriptorsAndGoroutinesReturnToBaselineAfterAnAttack: 200 callers
// that connect, send a huge body, or idle, then leave, leave nothing
// behind in the server.
func TestDescriptorsAndGoroutinesReturnToBaselineAfterAnAttack(t *testing.T) {
	a, addr := servedAPI(t, APILimits{MaxConns: 64})
	client := apiClient(a)
	if resp, err := client.Get("https://" + addr + "/roots"); err == nil { // warm up the server's own goroutines
		resp.Body.Close()
	}
	client.CloseIdleConnections()
	baseFDs, baseG := openFDs(t), runtime.NumGoroutine()

	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch i % 3 {
			case 0: // connect and leave
				if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
					c.Close()
				}
			case 1: // a body over the limit
				req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/1.0/sign", &countingZeros{limit: 4 << 20})
				if resp, err := client.Do(req); err == nil {
					resp.Body.Close()
				}
			case 2: // a TLS handshake, then idle, then leave
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 20 * time.Second}, "tcp", addr, &tls.Config{RootCAs: a.CA().Pool(), ServerName: "127.0.0.1"})
				if err == nil {
					c.Close()
				}
			}
		}()
	}
	wg.Wait()
	client.CloseIdleConnections()

	deadline := time.Now().Add(20 * time.Second)
	for {
		fds, g := openFDs(t), runtime.NumGoroutine()
		if fds <= baseFDs && g <= baseG+2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the attack: %d descriptors (baseline %d), %d goroutines (baseline %d)", fds, baseFDs, g, baseG)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}
