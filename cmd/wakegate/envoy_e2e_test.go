package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/wakegate/wakegate/envoy"
	"github.com/wakegate/wakegate/envoy/envoytest"
	"github.com/wakegate/wakegate/wire"
)

// TestEnvoyConfigBuildsThroughARealGateway proves, without Envoy, that
// what Envoy would load matches what the gateway accepts: TLS configured
// only from the generated cluster's UpstreamTlsContext and the secrets it
// names (SNI, SAN matchers, ALPN, trust bundle, certificate) carries real
// buildctl builds through a real gateway to a real BuildKit —
//
//   - in xDS mode, from an ADS stream to 'wakegate envoy xds' (enrolled
//     with a token, --cert-ttl 6s), before and after the certificate it
//     serves is renewed and pushed as a new version;
//   - in static mode, from the bootstrap of 'wakegate envoy bootstrap
//     --creds DIR' and the files 'wakegate envoy creds' keeps there;
//
// and a cluster generated for another server name is refused by the real
// gateway's certificate.
func TestEnvoyConfigBuildsThroughARealGateway(t *testing.T) {
	g := startCertGateway(t)
	buildctl := tool(t, "WAKEGATE_BUILDCTL", "buildctl")
	bctx := buildContext(t, staticBusybox(t))
	dir, err := os.MkdirTemp("", "wgx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	// xDS mode.
	sock := filepath.Join(dir, "xds.sock")
	tok := strings.TrimSpace(mustRun(t, "certs", "token", "--dir", g.caDir, "--name", "envoy-ci"))
	xdsLog := background(t, "envoy", "xds", "--listen", "unix://"+sock, "--gateway", g.addr,
		"--ca-url", g.caURL, "--ca-fingerprint", g.fp, "--token", tok, "--cert-ttl", "6s")
	xdsLog.waitFor(t, xdsListeningRE, 0, 20*time.Second)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stand := followADS(t, conn)

	fwd := tlsForwarder(t, stand.dial)
	first := stand.serial()
	out := buildctlThrough(t, buildctl, fwd, bctx, g)
	if runStepCached(t, out) {
		t.Fatalf("first build on an empty cache reports its RUN step CACHED:\n%s", out)
	}

	t.Log("waiting for the xDS server to push a renewed certificate")
	renewed := stand.waitSerialChange(t, first, 30*time.Second)
	t.Logf("certificate %s replaced by %s", first, renewed)
	if out := buildctlThrough(t, buildctl, fwd, bctx, g); !runStepCached(t, out) {
		t.Fatalf("build with the renewed certificate is not CACHED:\n%s", out)
	}
	g.logs.waitFor(t, regexp.MustCompile(`identity=envoy-ci`), 0, 10*time.Second)

	t.Run("a cluster generated for another server name is refused", func(t *testing.T) {
		c := envoy.Config{Role: envoy.Client, Listen: "127.0.0.1:9080", Gateway: g.addr, ServerName: "wrong.example"}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		clusters, err := c.Clusters(envoy.Secrets{})
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := envoytest.ClientTLS(clusters[0], stand.secrets())
		if err != nil {
			t.Fatal(err)
		}
		_, err = tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", g.addr, cfg)
		if err == nil || !strings.Contains(err.Error(), "matches no SAN matcher") {
			t.Fatalf("dial with SAN matcher wrong.example = %v, want the SAN matcher's refusal", err)
		}
	})

	t.Run("static bootstrap with credentials kept by envoy creds", func(t *testing.T) {
		creds := filepath.Join(dir, "creds")
		tok := strings.TrimSpace(mustRun(t, "certs", "token", "--dir", g.caDir, "--name", "envoy-static"))
		credsLog := background(t, "envoy", "creds", "--out", creds, "--ca-url", g.caURL, "--ca-fingerprint", g.fp, "--token", tok)
		credsLog.waitFor(t, credsWrittenRE, 0, 20*time.Second)
		file := filepath.Join(dir, "envoy.json")
		mustRun(t, "envoy", "bootstrap", "--gateway", g.addr, "--listen", "127.0.0.1:9080", "--creds", creds, "--out", file)
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var b bootstrapv3.Bootstrap
		if err := protojson.Unmarshal(data, &b); err != nil {
			t.Fatal(err)
		}
		gw := b.GetStaticResources().GetClusters()[0]
		fwd := tlsForwarder(t, func(ctx context.Context) (net.Conn, error) { return dialCluster(ctx, gw, envoytest.Secrets{}) })
		if out := buildctlThrough(t, buildctl, fwd, bctx, g); !runStepCached(t, out) {
			t.Fatalf("build through the static bootstrap's cluster, on the same engine, is not CACHED:\n%s", out)
		}
		g.logs.waitFor(t, regexp.MustCompile(`identity=envoy-static`), 0, 10*time.Second)
	})
}

// buildctlThrough runs buildctl on bctx through the plain address fwd.
func buildctlThrough(t *testing.T, buildctl, fwd, bctx string, g *certGateway) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), buildctl, append([]string{"--addr", "tcp://" + fwd}, buildctlArgs(bctx)...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("buildctl through the Envoy-configured TLS: %v\n%s\ngateway log:\n%s", err, out, g.logs)
	}
	return string(out)
}

// dialCluster opens the TLS connection Envoy would open to the cluster.
func dialCluster(ctx context.Context, c *cluster.Cluster, s envoytest.Secrets) (net.Conn, error) {
	cfg, err := envoytest.ClientTLS(c, s)
	if err != nil {
		return nil, err
	}
	network, addr, err := envoytest.Endpoint(c)
	if err != nil {
		return nil, err
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if p := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != wire.ProtoProxy {
		conn.Close()
		return nil, &protoError{p}
	}
	return conn, nil
}

type protoError struct{ got string }

func (e *protoError) Error() string { return "negotiated ALPN " + e.got + ", want " + wire.ProtoProxy }

// tlsForwarder is Envoy's TCP proxy in miniature: plain connections on
// loopback, each carried over a connection from dial. It stops with the
// test.
func tlsForwarder(t *testing.T, dial func(context.Context) (net.Conn, error)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				up, err := dial(ctx)
				if err != nil {
					t.Logf("forwarder: %v", err)
					return
				}
				defer up.Close()
				stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
				defer stop()
				var pair sync.WaitGroup
				pair.Go(func() { io.Copy(up, c); up.(*tls.Conn).CloseWrite() })
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				pair.Wait()
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// adsStandIn holds what an Envoy on one ADS stream holds, applying and
// ACKing every push, as Envoy does, until the test ends.
type adsStandIn struct {
	mu      sync.Mutex // guards cfg and changed
	cfg     *envoytest.Config
	changed chan struct{}
}

func followADS(t *testing.T, conn *grpc.ClientConn) *adsStandIn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := envoytest.DialADS(ctx, conn, envoy.DefaultNodeID(envoy.Client))
	if err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
	cfg, err := a.Fetch(fctx)
	fcancel()
	if err != nil {
		t.Fatal(err)
	}
	for typeURL, v := range cfg.Versions {
		if v != cfg.Versions[resource.SecretType] {
			t.Fatalf("%s at version %s, secrets at %s: want one version", typeURL, v, cfg.Versions[resource.SecretType])
		}
	}
	s := &adsStandIn{cfg: cfg, changed: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			next := &envoytest.Config{Versions: map[string]string{}}
			for _, typeURL := range []string{resource.ClusterType, resource.ListenerType, resource.SecretType} {
				resp, err := a.Next(ctx, typeURL)
				if err != nil {
					return // the test ended
				}
				c, err := envoytest.Take(resp)
				if err != nil {
					t.Errorf("push of %s version %s: %v", typeURL, resp.GetVersionInfo(), err)
					a.Nack(resp, err.Error())
					return
				}
				next.Clusters = append(next.Clusters, c.Clusters...)
				next.Listeners = append(next.Listeners, c.Listeners...)
				next.Secrets = append(next.Secrets, c.Secrets...)
				next.Versions[typeURL] = resp.GetVersionInfo()
				if err := a.Ack(resp); err != nil {
					return
				}
			}
			s.mu.Lock()
			s.cfg = next
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		a.Close()
		<-done
	})
	return s
}

func (s *adsStandIn) current() *envoytest.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

func (s *adsStandIn) secrets() envoytest.Secrets { return s.current().SecretSource() }

// dial opens a connection with the TLS of the configuration applied now:
// Envoy uses a rotated certificate for new connections.
func (s *adsStandIn) dial(ctx context.Context) (net.Conn, error) {
	cfg := s.current()
	return dialCluster(ctx, cfg.Cluster(envoy.GatewayCluster), cfg.SecretSource())
}

func (s *adsStandIn) serial() string {
	cfg := s.current()
	tc, err := envoytest.ClientTLS(cfg.Cluster(envoy.GatewayCluster), cfg.SecretSource())
	if err != nil {
		return "error: " + err.Error()
	}
	c, _ := tc.GetClientCertificate(nil)
	return c.Leaf.SerialNumber.String()
}

func (s *adsStandIn) waitSerialChange(t *testing.T, from string, timeout time.Duration) string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if got := s.serial(); got != from {
			return got
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no renewed certificate pushed within %s (still serial %s)", timeout, from)
		}
	}
}
