package envoy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/wakegate/wakegate/envoy"
	"github.com/wakegate/wakegate/envoy/envoytest"
)

// wait bounds every wait on the server: a push takes milliseconds.
const wait = 10 * time.Second

// fakeCreds are credentials a test renews when it chooses.
type fakeCreds struct {
	mu      sync.Mutex // guards cur and changed
	cur     *tls.Certificate
	changed chan struct{}
}

func newFakeCreds(c *tls.Certificate) *fakeCreds {
	return &fakeCreds{cur: c, changed: make(chan struct{})}
}

func (f *fakeCreds) Current() *tls.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

func (f *fakeCreds) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// renew replaces the certificate, as a renewer does at two thirds of its
// life.
func (f *fakeCreds) renew(c *tls.Certificate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur = c
	close(f.changed)
	f.changed = make(chan struct{})
}

// logBuf keeps log output and lets a test wait for a line.
type logBuf struct {
	mu      sync.Mutex // guards b and changed
	b       bytes.Buffer
	changed chan struct{}
}

func newLogBuf() *logBuf { return &logBuf{changed: make(chan struct{})} }

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) waitFor(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		s, ch := l.b.String(), l.changed
		l.mu.Unlock()
		if m := re.FindString(s); m != "" {
			return m
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no log line matching %q within %s:\n%s", re, wait, s)
		}
	}
}

// noLeaks runs f, then checks that every goroutine it started has ended.
func noLeaks(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	baseline := runtime.NumGoroutine()
	t.Run("run", f)
	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after the server stopped, baseline %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

type xdsServer struct {
	srv  *envoy.Server
	conn *grpc.ClientConn
	log  *logBuf
}

// startXDS runs an ADS server for c on loopback until the test ends, and
// a client connection to it. Cleanup stops both and checks Run returned.
func startXDS(t *testing.T, c envoy.Config, creds envoy.Credentials, ca *testCA) *xdsServer {
	t.Helper()
	logs := newLogBuf()
	srv, err := envoy.NewServer(envoy.ServerConfig{
		Envoy: c, Creds: creds, Roots: ca.roots(),
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(wait):
			t.Errorf("Run did not return within %s of its context ending", wait)
		}
		conn.Close()
	})
	return &xdsServer{srv: srv, conn: conn, log: logs}
}

func dialADS(t *testing.T, x *xdsServer, node string) *envoytest.ADS {
	t.Helper()
	a, err := envoytest.DialADS(t.Context(), x.conn, node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func fetch(t *testing.T, a *envoytest.ADS) *envoytest.Config {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	cfg, err := a.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func next(t *testing.T, a *envoytest.ADS, typeURL string) *discovery.DiscoveryResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	resp, err := a.Next(ctx, typeURL)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func clientConfig() envoy.Config {
	return envoy.Config{Role: envoy.Client, Listen: "127.0.0.1:9080", Gateway: "gateway.test:8443"}
}

// servedSerial is the serial of the certificate in the served secrets.
func servedSerial(t *testing.T, cfg *envoytest.Config) string {
	t.Helper()
	tlsCfg, err := envoytest.ClientTLS(cfg.Cluster(envoy.GatewayCluster), cfg.SecretSource())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tlsCfg.GetClientCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return cert.Leaf.SerialNumber.String()
}

func TestADSServesListenerClusterAndSecretsAtOneVersion(t *testing.T) {
	noLeaks(t, func(t *testing.T) {
		ca := newTestCA(t)
		cert := ca.issue(t, leaf{name: "ci", usage: clientAuth})
		x := startXDS(t, clientConfig(), newFakeCreds(cert), ca)
		a := dialADS(t, x, envoy.DefaultNodeID(envoy.Client))
		cfg := fetch(t, a)

		for typeURL, v := range cfg.Versions {
			if v != "1" {
				t.Errorf("%s at version %q, want every type at 1", typeURL, v)
			}
		}
		if len(cfg.Versions) != 3 {
			t.Errorf("versions of %d types, want listener, cluster and secret", len(cfg.Versions))
		}
		if len(cfg.Listeners) != 1 || cfg.Listeners[0].GetName() != envoy.ListenerName {
			t.Errorf("listeners %v, want one named %s", cfg.Listeners, envoy.ListenerName)
		}
		if cfg.Cluster(envoy.GatewayCluster) == nil || len(cfg.Clusters) != 1 {
			t.Errorf("clusters %v, want one named %s", cfg.Clusters, envoy.GatewayCluster)
		}
		if got := cfg.SecretNames(); strings.Join(got, ",") != envoy.TrustSecret+","+envoy.CertSecret {
			t.Errorf("secrets named %v", got)
		}
		if len(cfg.Secrets) != 2 {
			t.Errorf("%d secrets served, want the certificate and the trust bundle", len(cfg.Secrets))
		}
		if got, want := servedSerial(t, cfg), cert.Leaf.SerialNumber.String(); got != want {
			t.Errorf("served certificate serial %s, want %s", got, want)
		}
		x.log.waitFor(t, regexp.MustCompile(`msg="xds: envoy applied" stream=\d+ type=secret version=1`))
	})
}

func TestADSPushesARenewedCertificateAsANewVersionOfEveryType(t *testing.T) {
	noLeaks(t, func(t *testing.T) {
		ca := newTestCA(t)
		creds := newFakeCreds(ca.issue(t, leaf{name: "ci", usage: clientAuth}))
		x := startXDS(t, clientConfig(), creds, ca)
		a := dialADS(t, x, envoy.DefaultNodeID(envoy.Client))
		before := fetch(t, a)

		renewed := ca.issue(t, leaf{name: "ci", usage: clientAuth})
		began := time.Now()
		creds.renew(renewed)
		got := &envoytest.Config{Versions: map[string]string{}}
		for _, typeURL := range []string{resource.ClusterType, resource.ListenerType, resource.SecretType} {
			resp := next(t, a, typeURL)
			if resp.GetVersionInfo() != "2" {
				t.Fatalf("%s pushed at version %q after the renewal, want 2", typeURL, resp.GetVersionInfo())
			}
			if err := takeInto(got, resp); err != nil {
				t.Fatal(err)
			}
			if err := a.Ack(resp); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("renewal to new version of every type in %s", time.Since(began).Round(time.Millisecond))
		if got, want := servedSerial(t, got), renewed.Leaf.SerialNumber.String(); got != want {
			t.Fatalf("after the renewal the served serial is %s, want %s (before: %s)", got, want, servedSerial(t, before))
		}
		x.log.waitFor(t, regexp.MustCompile(`msg="xds: envoy applied" stream=\d+ type=secret version=2`))
		if v := x.srv.Version(); v != "2" {
			t.Fatalf("server version %q, want 2", v)
		}
	})
}

// takeInto reads one response into cfg, as Fetch does.
func takeInto(cfg *envoytest.Config, resp *discovery.DiscoveryResponse) error {
	c, err := envoytest.Take(resp)
	if err != nil {
		return err
	}
	cfg.Listeners = append(cfg.Listeners, c.Listeners...)
	cfg.Clusters = append(cfg.Clusters, c.Clusters...)
	cfg.Secrets = append(cfg.Secrets, c.Secrets...)
	cfg.Versions[resp.GetTypeUrl()] = resp.GetVersionInfo()
	return nil
}

// TestADSRejectedSnapshotIsLoggedAndThePreviousStaysServed: Envoy rejects
// the secret of version 2. The server logs Envoy's error and serves
// version 1 again — to new streams too — and does not push version 2 again
// (the cache alone would, at once, forever); the next renewal is pushed.
func TestADSRejectedSnapshotIsLoggedAndThePreviousStaysServed(t *testing.T) {
	noLeaks(t, func(t *testing.T) {
		ca := newTestCA(t)
		first := ca.issue(t, leaf{name: "ci", usage: clientAuth})
		creds := newFakeCreds(first)
		x := startXDS(t, clientConfig(), creds, ca)
		a := dialADS(t, x, envoy.DefaultNodeID(envoy.Client))
		fetch(t, a)

		creds.renew(ca.issue(t, leaf{name: "ci", usage: clientAuth}))
		for _, typeURL := range []string{resource.ClusterType, resource.ListenerType} {
			if err := a.Ack(next(t, a, typeURL)); err != nil {
				t.Fatal(err)
			}
		}
		bad := next(t, a, resource.SecretType)
		if bad.GetVersionInfo() != "2" {
			t.Fatalf("secret at version %q, want 2", bad.GetVersionInfo())
		}
		const envoyErr = "Failed to load certificate chain from <inline>"
		if err := a.Nack(bad, envoyErr); err != nil {
			t.Fatal(err)
		}
		x.log.waitFor(t, regexp.MustCompile(`level=ERROR msg="xds: envoy rejected the configuration and keeps its previous one" stream=\d+ type=secret rejected_version=2 kept_version=1 envoy_error="`+regexp.QuoteMeta(envoyErr)+`"`))
		x.log.waitFor(t, regexp.MustCompile(`msg="xds: serving the previous snapshot again" version=1`))
		if v := x.srv.Version(); v != "1" {
			t.Fatalf("server version %q after the rejection, want 1", v)
		}
		// The types Envoy had applied at 2 are brought back to 1.
		for _, typeURL := range []string{resource.ClusterType, resource.ListenerType} {
			resp := next(t, a, typeURL)
			if resp.GetVersionInfo() != "1" {
				t.Fatalf("%s at version %q after the rollback, want 1", typeURL, resp.GetVersionInfo())
			}
			if err := a.Ack(resp); err != nil {
				t.Fatal(err)
			}
		}

		// A second Envoy starting now gets version 1, the first certificate.
		fresh := fetch(t, dialADS(t, x, envoy.DefaultNodeID(envoy.Client)))
		for typeURL, v := range fresh.Versions {
			if v != "1" {
				t.Errorf("a new stream gets %s at version %q, want 1", typeURL, v)
			}
		}
		if got, want := servedSerial(t, fresh), first.Leaf.SerialNumber.String(); got != want {
			t.Errorf("a new stream is served serial %s, want the first certificate's %s", got, want)
		}

		// The rejected version is not pushed again: the next secret this
		// stream receives is the next renewal's.
		third := ca.issue(t, leaf{name: "ci", usage: clientAuth})
		creds.renew(third)
		resp := next(t, a, resource.SecretType)
		if resp.GetVersionInfo() != "3" {
			t.Fatalf("after the rejection the stream received secret version %q, want the next renewal's, 3", resp.GetVersionInfo())
		}
		c, err := envoytest.Take(resp)
		if err != nil {
			t.Fatal(err)
		}
		c.Clusters = fresh.Clusters
		if got, want := servedSerial(t, c), third.Leaf.SerialNumber.String(); got != want {
			t.Fatalf("version 3 serves serial %s, want %s", got, want)
		}
	})
}

func TestADSRefusesAStreamFromAnotherNode(t *testing.T) {
	noLeaks(t, func(t *testing.T) {
		ca := newTestCA(t)
		x := startXDS(t, clientConfig(), newFakeCreds(ca.issue(t, leaf{name: "ci", usage: clientAuth})), ca)
		a := dialADS(t, x, "someone-else")
		if err := a.Subscribe(resource.SecretType, envoy.CertSecret); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		_, err := a.Next(ctx, resource.SecretType)
		if status.Code(errors.Unwrap(err)) != codes.PermissionDenied || !strings.Contains(err.Error(), `node "someone-else" is not served here`) {
			t.Fatalf("a stream from another node got %v, want PermissionDenied naming the node", err)
		}
		x.log.waitFor(t, regexp.MustCompile(`level=WARN msg="xds: refused a stream from another node" stream=\d+ node=someone-else serves=wakegate-client`))
	})
}

func TestADSRefusesDeltaStreams(t *testing.T) {
	noLeaks(t, func(t *testing.T) {
		ca := newTestCA(t)
		x := startXDS(t, clientConfig(), newFakeCreds(ca.issue(t, leaf{name: "ci", usage: clientAuth})), ca)
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(x.conn).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "api_type GRPC") {
			t.Fatalf("a delta stream got %v, want Unimplemented saying to use api_type GRPC", err)
		}
	})
}

func TestADSServerRefusesCredentialsEnvoyCouldNotUse(t *testing.T) {
	ca := newTestCA(t)
	cert := ca.issue(t, leaf{name: "ci", usage: clientAuth})
	for name, cfg := range map[string]envoy.ServerConfig{
		"no key":   {Envoy: clientConfig(), Creds: newFakeCreds(&tls.Certificate{Certificate: cert.Certificate, Leaf: cert.Leaf}), Roots: ca.roots()},
		"no roots": {Envoy: clientConfig(), Creds: newFakeCreds(cert)},
		"no role":  {Envoy: envoy.Config{Listen: "127.0.0.1:1"}, Creds: newFakeCreds(cert), Roots: ca.roots()},
	} {
		if _, err := envoy.NewServer(cfg); err == nil {
			t.Errorf("%s: NewServer accepted it", name)
		}
	}
}
