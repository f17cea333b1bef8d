package main

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/envoy"
	"github.com/wakegate/wakegate/envoy/envoytest"
)

// envoyCreds writes credentials from a fresh offline CA: a client's
// directory (as 'certs issue' writes it) and an engine's (as 'envoy creds
// --role engine' writes it). It returns the two directories and the
// client certificate's serial.
func envoyCreds(t *testing.T) (client, engineDir, serial string) {
	t.Helper()
	work := t.TempDir()
	ca, err := certs.Init(filepath.Join(work, "ca"), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ca.Issue(certs.Client, "ci", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client = filepath.Join(work, "client")
	if err := ca.WriteClientCreds(client, l); err != nil {
		t.Fatal(err)
	}
	e, err := ca.Issue(certs.Server, "wakegate-engine-0", []string{"wakegate-engine-0"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	engineDir = filepath.Join(work, "engine")
	if err := envoy.WriteCreds(envoy.Engine, engineDir, e.TLSCertificate(), []*x509.Certificate{ca.Root}); err != nil {
		t.Fatal(err)
	}
	return client, engineDir, l.Cert.SerialNumber.String()
}

func TestEnvoyHelpNamesEverySubcommandAndItsFlags(t *testing.T) {
	top := mustRun(t, "help")
	if !strings.Contains(top, "  envoy ") {
		t.Errorf("'wakegate help' does not list envoy:\n%s", top)
	}
	for _, args := range [][]string{{"envoy", "help"}, {"envoy", "-h"}, {"help", "envoy"}} {
		out := mustRun(t, args...)
		for _, sub := range []string{"bootstrap", "xds", "creds", "docs/envoy.md"} {
			if !strings.Contains(out, sub) {
				t.Errorf("'wakegate %s' does not mention %s:\n%s", strings.Join(args, " "), sub, out)
			}
		}
	}
	for sub, flags := range map[string][]string{
		"bootstrap": {"-role", "-gateway", "-server-name", "-listen", "-unsafe-listen", "-upstream", "-node", "-creds", "-xds", "-out", "watched", "wakegate-proxy/1", "wakegate://role/gateway"},
		"xds":       {"-listen", "-unsafe-listen", "-role", "-gateway", "-envoy-listen", "-upstream", "-node", "-creds", "-ca-url", "-ca-fingerprint", "-token", "-oidc", "-cert-ttl", "two thirds", "mode 0600"},
		"creds":     {"-role", "-out", "-creds", "-ca-url", "-ca-fingerprint", "-token", "-token-file", "-oidc", "-cert-ttl", "0600"},
	} {
		out := mustRun(t, "envoy", sub, "-h")
		for _, f := range flags {
			if !strings.Contains(out, f) {
				t.Errorf("'wakegate envoy %s -h' does not mention %s:\n%s", sub, f, out)
			}
		}
	}
}

func TestEnvoyMistakesAreRefusedWithWhatToDo(t *testing.T) {
	client, engineDir, _ := envoyCreds(t)
	empty := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bootstrap", "--creds", client}, "--gateway HOST:PORT"},
		{[]string{"bootstrap", "--gateway", "gw:8443", "--listen", "localhost:9080", "--creds", client}, "use 127.0.0.1"},
		{[]string{"bootstrap", "--gateway", "gw:8443", "--listen", "9080", "--creds", client}, "--listen"},
		{[]string{"bootstrap", "--gateway", "gw:8443", "--listen", "0.0.0.0:9080", "--creds", client}, "or pass --unsafe-listen"},
		{[]string{"bootstrap", "--gateway", "gw:8443", "--creds", empty}, "has no client.crt: write the credentials with 'wakegate certs issue --out"},
		{[]string{"bootstrap", "--gateway", "gw:8443"}, "give one of --creds DIR"},
		{[]string{"bootstrap", "--gateway", "gw:8443", "--creds", client, "--xds", "unix:///run/x.sock"}, "give one of --creds DIR"},
		{[]string{"bootstrap", "--gateway", "gw:8443", "--xds", "unix:///run/x.sock"}, "to 'wakegate envoy xds'"},
		{[]string{"bootstrap", "--xds", "run/x.sock"}, "--xds"},
		{[]string{"bootstrap", "--role", "engine", "--upstream", "unix:///run/bk.sock", "--creds", engineDir}, "needs --listen IP:PORT"},
		{[]string{"bootstrap", "--role", "engine", "--listen", "0.0.0.0:8372", "--creds", engineDir}, "--upstream unix:///PATH"},
		{[]string{"bootstrap", "--role", "engine", "--listen", "0.0.0.0:8372", "--upstream", "unix:///run/bk.sock", "--creds", client}, "has no engine.crt"},
		{[]string{"bootstrap", "--role", "server", "--creds", client}, "want client or engine"},
		{[]string{"xds", "--listen", "0.0.0.0:18000", "--gateway", "gw:8443", "--creds", client}, "hands its private key to whoever connects"},
		{[]string{"xds", "--gateway", "gw:8443", "--envoy-listen", "0.0.0.0:9080", "--creds", client}, "--unsafe-envoy-listen"},
		{[]string{"xds", "--gateway", "gw:8443"}, "credentials are required"},
		{[]string{"xds", "--gateway", "gw:8443", "--token", "T"}, "needs --ca-url and --ca-fingerprint"},
		{[]string{"xds", "--role", "engine", "--envoy-listen", "0.0.0.0:8372", "--upstream", "unix:///run/bk.sock", "--oidc", "github"}, "for the client role"},
		{[]string{"xds", "--role", "engine", "--envoy-listen", "0.0.0.0:8372", "--upstream", "unix:///run/bk.sock", "--creds", client}, "has no engine.crt"},
		{[]string{"creds", "--creds", client}, "--out DIR is required"},
		{[]string{"creds", "--out", empty}, "credentials are required"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out := newLogWatch()
			err := run(t.Context(), append([]string{"envoy"}, tc.args...), out, out)
			if err == nil || !strings.Contains(err.Error()+out.String(), tc.want) {
				t.Fatalf("wakegate envoy %s = %v\n%s\nwant an error saying %q", strings.Join(tc.args, " "), err, out, tc.want)
			}
		})
	}
}

// TestEnvoyBootstrapWritesWhatEnvoyReads: the bootstrap on stdout or in
// --out reads back as a Bootstrap, and the certificate Envoy would load
// through the SDS files it names is the one in the credentials directory.
func TestEnvoyBootstrapWritesWhatEnvoyReads(t *testing.T) {
	client, _, serial := envoyCreds(t)
	read := func(t *testing.T, data []byte) *bootstrapv3.Bootstrap {
		t.Helper()
		var b bootstrapv3.Bootstrap
		if err := protojson.Unmarshal(data, &b); err != nil {
			t.Fatalf("the bootstrap does not read back: %v\n%s", err, data)
		}
		if err := b.ValidateAll(); err != nil {
			t.Fatal(err)
		}
		return &b
	}

	out := mustRunStdout(t, "envoy", "bootstrap", "--gateway", "gateway.example.com:8443", "--creds", client)
	b := read(t, []byte(out))
	cl := b.GetStaticResources().GetClusters()[0]
	cfg, err := envoytest.ClientTLS(cl, envoytest.Secrets{})
	if err != nil {
		t.Fatalf("Envoy could not load the credentials the bootstrap names: %v", err)
	}
	cert, err := cfg.GetClientCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cert.Leaf.SerialNumber.String(); got != serial {
		t.Fatalf("the bootstrap's certificate has serial %s, want %s", got, serial)
	}
	if cfg.ServerName != "gateway.example.com" {
		t.Fatalf("SNI %q, want gateway.example.com", cfg.ServerName)
	}

	file := filepath.Join(t.TempDir(), "envoy.json")
	if out := mustRunStdout(t, "envoy", "bootstrap", "--gateway", "gateway.example.com:8443", "--creds", client, "--out", file); out != "" {
		t.Fatalf("with --out, stdout holds %q", out)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	read(t, data)
	if strings.Contains(string(data), "PRIVATE KEY") {
		t.Fatal("the bootstrap holds a private key")
	}

	x := read(t, []byte(mustRunStdout(t, "envoy", "bootstrap", "--role", "engine", "--node", "engine-7", "--xds", "unix:///run/wakegate/xds.sock")))
	if x.GetNode().GetId() != "engine-7" || x.GetDynamicResources().GetAdsConfig() == nil || len(x.GetStaticResources().GetListeners()) != 0 {
		t.Fatalf("the xDS bootstrap holds node %q, ADS %v, %d listeners; want engine-7, ADS, none",
			x.GetNode().GetId(), x.GetDynamicResources().GetAdsConfig(), len(x.GetStaticResources().GetListeners()))
	}
}

// mustRunStdout runs wakegate and returns its stdout alone.
func mustRunStdout(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr := newLogWatch(), newLogWatch()
	if err := run(t.Context(), args, stdout, stderr); err != nil {
		t.Fatalf("wakegate %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return stdout.String()
}

var xdsListeningRE = regexp.MustCompile(`msg="xds listening" addr=(\S+) node=(\S+) role=(\S+) local="([^"]+)"`)

// TestEnvoyXDSServesOverAPrivateUnixSocket runs 'wakegate envoy xds' on a
// unix socket: only its user may open it (0600), it says it is local, and
// an ADS stream gets the certificate of --creds.
func TestEnvoyXDSServesOverAPrivateUnixSocket(t *testing.T) {
	client, _, serial := envoyCreds(t)
	dir, err := os.MkdirTemp("", "wgx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "xds.sock")
	logs := background(t, "envoy", "xds", "--listen", "unix://"+sock, "--gateway", "127.0.0.1:8443", "--creds", client)
	m, _ := logs.waitFor(t, xdsListeningRE, 0, 10*time.Second)
	if m[1] != sock || m[2] != "wakegate-client" || !strings.Contains(m[4], "mode 0600") {
		t.Fatalf("xds listening line %q: want the socket, node wakegate-client, and that it is local", m[0])
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("xds socket mode %v, want a socket of mode 0600", fi.Mode())
	}

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	a, err := envoytest.DialADS(ctx, conn, "wakegate-client")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	got, err := a.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := envoytest.ClientTLS(got.Cluster(envoy.GatewayCluster), got.SecretSource())
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := cfg.GetClientCertificate(nil)
	if s := cert.Leaf.SerialNumber.String(); s != serial {
		t.Fatalf("served serial %s, want the --creds certificate's %s", s, serial)
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Fatalf("the log holds a private key:\n%s", logs)
	}
}

var credsWrittenRE = regexp.MustCompile(`msg="credentials written" dir=(\S+) identity=(\S+) serial=(\d+)`)

func TestEnvoyCredsWritesThePrivateKey0600AndNeverLogsIt(t *testing.T) {
	client, _, serial := envoyCreds(t)
	out := filepath.Join(t.TempDir(), "envoy-creds")
	logs := background(t, "envoy", "creds", "--out", out, "--creds", client)
	m, _ := logs.waitFor(t, credsWrittenRE, 0, 10*time.Second)
	if m[1] != out || m[3] != serial {
		t.Fatalf("credentials written %q: want dir %s, serial %s", m[0], out, serial)
	}
	f := envoy.FilesFor(envoy.Client)
	for name, perm := range map[string]os.FileMode{f.Cert: 0o644, f.Key: 0o600, f.CA: 0o644} {
		fi, err := os.Stat(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), perm)
		}
	}
	key, err := os.ReadFile(filepath.Join(out, f.Key))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(key), "PRIVATE KEY") || strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Fatalf("want the key in its file and not in the log:\n%s", logs)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("%d files in the credentials directory, want the three (no temporary left)", len(entries))
	}
	if _, _, err := certs.LoadClientCreds(out); err != nil {
		t.Fatalf("'wakegate connect --creds' could not read what was written: %v", err)
	}
}
