package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// plainDial dials a test engine at "tcp://host:port". The gateway's tests
// stand in for engine.Client (which dials "tls://host:port" engines over
// mTLS) with plain TCP engines and this dialer.
func plainDial(ctx context.Context, addr string) (net.Conn, error) {
	hostport, ok := strings.CutPrefix(addr, "tcp://")
	if !ok {
		return nil, fmt.Errorf("test engine address %q: want tcp://host:port", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", hostport)
}

func TestNewServerNeedsAnEngineDialer(t *testing.T) {
	ca, err := certs.Init(t.TempDir(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certs.Server, "gateway", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sc := leaf.TLSCertificate()
	pool := newTestPool(t, 1, DefaultPolicy)
	_, err = NewServer(Config{TLS: certs.ServerTLS(func() *tls.Certificate { return sc }, ca.Pool()), Pool: pool})
	if err == nil || !strings.Contains(err.Error(), "no engine dialer") {
		t.Fatalf("NewServer without Dial = %v, want it refused: no address scheme is dialled by default", err)
	}
}
