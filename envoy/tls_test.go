package envoy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/envoy"
	"github.com/wakegate/wakegate/envoy/envoytest"
	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/wire"
)

// secretsFor makes the secrets Envoy would read for role in mode "ads"
// (served inline) or "files" (a credentials directory with its SDS files,
// written as 'wakegate envoy creds' and 'bootstrap --creds' write them).
func secretsFor(t *testing.T, role envoy.Role, mode string, cert *tls.Certificate, roots []*x509.Certificate) (envoy.Secrets, envoytest.Secrets) {
	t.Helper()
	if mode == "ads" {
		sec, err := envoy.SecretResources(cert, roots)
		if err != nil {
			t.Fatal(err)
		}
		return envoy.Secrets{}, envoytest.FromADS(sec...)
	}
	dir := t.TempDir()
	if err := envoy.WriteCreds(role, dir, cert, roots); err != nil {
		t.Fatal(err)
	}
	if err := envoy.WriteSDSFiles(role, dir); err != nil {
		t.Fatal(err)
	}
	return envoy.Secrets{Dir: dir}, envoytest.Secrets{}
}

// serve accepts TLS connections on ln until the test ends, handing each
// handshaken connection to handle; cleanup waits for every handler.
func serve(t *testing.T, ln net.Listener, handle func(*tls.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				tc.SetDeadline(time.Now().Add(wait))
				if tc.Handshake() != nil {
					return
				}
				handle(tc)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

// standInGateway serves the gateway's TLS profile (certs.ServerTLS with
// the gateway's ALPN names) with cert, admitting clients of clientRoots.
// Each connection reports its SNI and peer, then gets "ok".
type seen struct {
	sni, peer, alpn string
}

func standInGateway(t *testing.T, cert *tls.Certificate, clientRoots *x509.CertPool) (string, <-chan seen) {
	t.Helper()
	cfg := certs.ServerTLS(func() *tls.Certificate { return cert }, clientRoots, wire.ProtoProxy, wire.ProtoWake)
	snis := make(chan string, 1)
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		snis <- h.ServerName
		return nil, nil
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan seen, 1)
	serve(t, ln, func(c *tls.Conn) {
		cs := c.ConnectionState()
		out <- seen{sni: <-snis, peer: cs.PeerCertificates[0].Subject.CommonName, alpn: cs.NegotiatedProtocol}
		io.WriteString(c, "ok")
	})
	return ln.Addr().String(), out
}

// dialThrough dials addr with cfg and reads the stand-in's answer.
func dialThrough(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	b := make([]byte, 2)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != "ok" {
		return errors.New("unexpected answer " + string(b))
	}
	return nil
}

// TestClientRoleTLSReachesOnlyTheNamedGateway builds, from the generated
// cluster and its secrets (served over ADS, or read from a credentials
// directory), the TLS Envoy would originate, and dials a stand-in with the
// gateway's own TLS profile: the named gateway is reached with ALPN
// wakegate-proxy/1, SNI and the client's certificate; a certificate for
// another name, or from another CA, is refused by the SAN matcher and the
// trust bundle, not by Go's host name check (which is off).
func TestClientRoleTLSReachesOnlyTheNamedGateway(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	client := ca.issue(t, leaf{name: "ci", usage: clientAuth})
	for _, mode := range []string{"ads", "files"} {
		for _, tc := range []struct {
			name    string
			gateway func(port string) string
			cert    *tls.Certificate
			wantSNI string
			wantErr string
		}{
			{"named gateway", func(p string) string { return "gateway.test:" + p },
				ca.issue(t, leaf{name: identity.GatewayName, usage: gatewayAuth, dns: []string{"localhost", "gateway.test"}}), "gateway.test", ""},
			{"gateway by IP", func(p string) string { return "127.0.0.1:" + p },
				ca.issue(t, leaf{name: identity.GatewayName, usage: gatewayAuth, ips: []string{"127.0.0.1"}}), "", ""},
			{"certificate for another name", func(p string) string { return "gateway.test:" + p },
				ca.issue(t, leaf{name: identity.GatewayName, usage: gatewayAuth, dns: []string{"other.test"}}), "", "matches no SAN matcher"},
			{"IP not among the IP SANs", func(p string) string { return "127.0.0.1:" + p },
				ca.issue(t, leaf{name: identity.GatewayName, usage: gatewayAuth, dns: []string{"127.0.0.1"}}), "", "matches no SAN matcher"},
			{"another CA", func(p string) string { return "gateway.test:" + p },
				other.issue(t, leaf{name: identity.GatewayName, usage: gatewayAuth, dns: []string{"gateway.test"}}), "", "unknown authority"},
			{"client certificate as the gateway's", func(p string) string { return "gateway.test:" + p },
				ca.issue(t, leaf{name: "gateway.test", usage: clientAuth, dns: []string{"gateway.test"}}), "", "incompatible key usage"},
		} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				addr, saw := standInGateway(t, tc.cert, ca.pool())
				_, port, _ := net.SplitHostPort(addr)
				c := envoy.Config{Role: envoy.Client, Listen: "127.0.0.1:9080", Gateway: tc.gateway(port)}
				if err := c.Validate(); err != nil {
					t.Fatal(err)
				}
				src, res := secretsFor(t, envoy.Client, mode, client, ca.roots())
				clusters, err := c.Clusters(src)
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := envoytest.ClientTLS(clusters[0], res)
				if err != nil {
					t.Fatal(err)
				}
				_, dial, err := envoytest.Endpoint(clusters[0])
				if err != nil {
					t.Fatal(err)
				}
				if strings.HasPrefix(dial, "gateway.test:") {
					dial = addr // the name the certificate carries, at the stand-in's address
				}
				err = dialThrough(dial, cfg)
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("dial = %v, want an error saying %q", err, tc.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				s := <-saw
				if s.alpn != wire.ProtoProxy || s.peer != "ci" || s.sni != tc.wantSNI {
					t.Fatalf("the gateway saw ALPN %q, peer %q, SNI %q; want %q, ci, %q", s.alpn, s.peer, s.sni, wire.ProtoProxy, tc.wantSNI)
				}
			})
		}
	}
}

func TestEngineStatusProtocolIsTheEngineClients(t *testing.T) {
	if envoy.ProtoStatus != engine.ProtoStatus {
		t.Fatalf("envoy.ProtoStatus %q, engine.ProtoStatus %q", envoy.ProtoStatus, engine.ProtoStatus)
	}
}

// TestEngineRoleAdmitsOnlyTheGateway terminates TLS as the generated
// engine listener asks (its filter chains chosen by ALPN, its
// DownstreamTlsContext, the secrets over ADS or from files) and lets the
// gateway's own engine client (engine.Client, as the gateway dials) in: a
// stream reaches the upstream socket, and the readiness probe takes the
// status chain. Certificates without the gateway's role, from another CA,
// or not for client use are refused.
func TestEngineRoleAdmitsOnlyTheGateway(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	engineCert := ca.issue(t, leaf{name: identity.EngineName("0"), usage: serverAuth, dns: []string{identity.EngineName("0")}})
	gatewayURI := identity.RoleURI(identity.RoleGateway)
	gw := ca.issue(t, leaf{name: identity.GatewayName, usage: gatewayAuth, uris: []string{gatewayURI}})

	dir, err := os.MkdirTemp("", "wge")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	upstream := filepath.Join(dir, "bk.sock")
	echo, err := net.Listen("unix", upstream)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); io.Copy(c, c) })
		}
	})
	t.Cleanup(func() { echo.Close(); wg.Wait() })

	for _, mode := range []string{"ads", "files"} {
		t.Run(mode, func(t *testing.T) {
			c := envoy.Config{Role: envoy.Engine, Listen: "127.0.0.1:8372", Upstream: "unix://" + upstream}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			src, res := secretsFor(t, envoy.Engine, mode, engineCert, ca.roots())
			l, err := c.Listener(src)
			if err != nil {
				t.Fatal(err)
			}
			clusters, err := c.Clusters(src)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var chains []int
			var refusals []string
			cfg, err := envoytest.ServerTLS(l, res, func(i int) { mu.Lock(); chains = append(chains, i); mu.Unlock() })
			if err != nil {
				t.Fatal(err)
			}
			verify := cfg.GetConfigForClient
			cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
				inner, err := verify(h)
				if err != nil {
					return nil, err
				}
				inner = inner.Clone()
				check := inner.VerifyConnection
				inner.VerifyConnection = func(cs tls.ConnectionState) error {
					err := check(cs)
					if err != nil {
						mu.Lock()
						refusals = append(refusals, err.Error())
						mu.Unlock()
					}
					return err
				}
				return inner, nil
			}
			ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
			if err != nil {
				t.Fatal(err)
			}
			serve(t, ln, func(tc *tls.Conn) {
				if tc.ConnectionState().NegotiatedProtocol == envoy.ProtoStatus {
					answerReady(tc)
					return
				}
				// The TCP proxy: to the cluster the proxy chain names.
				network, addr, err := envoytest.Endpoint(clusters[0])
				if err != nil {
					return
				}
				up, err := net.Dial(network, addr)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() {
					defer close(done)
					io.Copy(up, tc)
					up.(*net.UnixConn).CloseWrite()
				}()
				io.Copy(tc, up)
				<-done
			})
			addr := "tls://" + ln.Addr().String()
			ctx, cancel := context.WithTimeout(t.Context(), wait)
			defer cancel()

			// The gateway, as it dials engines.
			ec := &engine.Client{TLS: certs.ClientTLS(func() *tls.Certificate { return gw }, ca.pool(), "")}
			conn, err := ec.Dial(ctx, addr)
			if err != nil {
				t.Fatalf("the gateway's dial: %v", err)
			}
			conn.SetDeadline(time.Now().Add(wait))
			io.WriteString(conn, "ping")
			b := make([]byte, 4)
			if _, err := io.ReadFull(conn, b); err != nil || string(b) != "ping" {
				t.Fatalf("through the engine listener to the upstream: %q, %v", b, err)
			}
			conn.Close()
			if err := ec.Ready(ctx, addr); err != nil {
				t.Fatalf("the gateway's readiness probe: %v", err)
			}
			mu.Lock()
			if len(chains) != 2 || chains[0] != 1 || chains[1] != 0 {
				t.Errorf("filter chains taken %v, want the proxy chain (1) for the stream, the status chain (0) for the probe", chains)
			}
			mu.Unlock()

			for _, bad := range []struct {
				name string
				cert *tls.Certificate
				want string
			}{
				{"client certificate", ca.issue(t, leaf{name: "ci", usage: clientAuth}), "matches no SAN matcher"},
				{"gateway's name without the role", ca.issue(t, leaf{name: identity.GatewayName, usage: gatewayAuth, dns: []string{identity.GatewayName}}), "matches no SAN matcher"},
				{"role from another CA", other.issue(t, leaf{name: identity.GatewayName, usage: gatewayAuth, uris: []string{gatewayURI}}), "unknown authority"},
				{"role, server usage only", ca.issue(t, leaf{name: identity.GatewayName, usage: serverAuth, uris: []string{gatewayURI}}), "incompatible key usage"},
			} {
				mu.Lock()
				refusals = nil
				mu.Unlock()
				ec := &engine.Client{TLS: certs.ClientTLS(func() *tls.Certificate { return bad.cert }, ca.pool(), "")}
				conn, err := ec.Dial(ctx, addr)
				if err == nil {
					// TLS 1.3: the client finishes first; the refusal
					// arrives as an alert on the first read.
					conn.SetDeadline(time.Now().Add(wait))
					_, err = conn.Read(make([]byte, 1))
					conn.Close()
				}
				if err == nil {
					t.Errorf("%s: admitted", bad.name)
					continue
				}
				mu.Lock()
				got := strings.Join(refusals, "; ")
				mu.Unlock()
				if !strings.Contains(got, bad.want) {
					t.Errorf("%s: refused with %q, want %q", bad.name, got, bad.want)
				}
			}
		})
	}
}

// answerReady stands for the health-check filter: 200 on GET ReadyPath.
func answerReady(c *tls.Conn) {
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	status := "404 Not Found"
	if req.Method == http.MethodGet && req.URL.Path == envoy.ReadyPath {
		status = "200 OK"
	}
	io.WriteString(c, "HTTP/1.1 "+status+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}
