package envoy_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/wakegate/wakegate/envoy"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The configurations the golden files show: one per role, with addresses
// as a real deployment would have them.
const (
	goldenCreds = "/etc/wakegate/creds"
	goldenXDS   = "unix:///run/wakegate/xds.sock"
)

func goldenConfig(t *testing.T, role envoy.Role) envoy.Config {
	t.Helper()
	c := envoy.Config{Role: role, Listen: "127.0.0.1:9080", Gateway: "gateway.example.com:8443"}
	if role == envoy.Engine {
		c = envoy.Config{Role: role, Listen: "0.0.0.0:8372", Upstream: "unix:///var/lib/wakegate/buildkitd.sock"}
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./envoy -run %s -update to write it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test ./envoy -update rewrites it after review):\n--- got\n%s", path, got)
	}
}

func marshal(t *testing.T, m, into interface {
	proto.Message
	ValidateAll() error
}) []byte {
	t.Helper()
	b, err := envoy.MarshalJSON(m, into)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBootstrapsMatchGoldenFiles(t *testing.T) {
	for _, role := range []envoy.Role{envoy.Client, envoy.Engine} {
		c := goldenConfig(t, role)
		t.Run(string(role)+"/creds", func(t *testing.T) {
			b, err := c.StaticBootstrap(goldenCreds)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "bootstrap-"+string(role)+"-creds.json", marshal(t, b, &bootstrap.Bootstrap{}))
			files, err := envoy.SDSFiles(role, goldenCreds)
			if err != nil {
				t.Fatal(err)
			}
			for name, data := range files {
				golden(t, "creds-"+string(role)+"-"+name, data)
			}
		})
		t.Run(string(role)+"/xds", func(t *testing.T) {
			b, err := c.XDSBootstrap(goldenXDS)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "bootstrap-"+string(role)+"-xds.json", marshal(t, b, &bootstrap.Bootstrap{}))
			// In this mode the bootstrap holds no listener: the golden
			// file of what the xDS server serves shows it.
			l, err := c.Listener(envoy.Secrets{})
			if err != nil {
				t.Fatal(err)
			}
			clusters, err := c.Clusters(envoy.Secrets{})
			if err != nil {
				t.Fatal(err)
			}
			served := marshal(t, l, &listener.Listener{})
			for _, cl := range clusters {
				served = append(served, marshal(t, cl, &cluster.Cluster{})...)
			}
			golden(t, "xds-"+string(role)+"-resources.json", served)
		})
	}
}

// TestEveryGeneratedResourcePassesValidateAll walks every message of every
// bootstrap, resource and SDS file, unpacking each typed config, and runs
// its generated ValidateAll: validation of a resource does not look inside
// its Any fields, so each must be checked on its own.
func TestEveryGeneratedResourcePassesValidateAll(t *testing.T) {
	ca := newTestCA(t)
	cert := ca.issue(t, leaf{name: "ci", usage: clientAuth})
	for _, role := range []envoy.Role{envoy.Client, envoy.Engine} {
		c := goldenConfig(t, role)
		var msgs []proto.Message
		b1, err := c.StaticBootstrap(goldenCreds)
		if err != nil {
			t.Fatal(err)
		}
		b2, err := c.XDSBootstrap(goldenXDS)
		if err != nil {
			t.Fatal(err)
		}
		l, err := c.Listener(envoy.Secrets{})
		if err != nil {
			t.Fatal(err)
		}
		clusters, err := c.Clusters(envoy.Secrets{})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b1, b2, l)
		for _, cl := range clusters {
			msgs = append(msgs, cl)
		}
		secrets, err := envoy.SecretResources(cert, ca.roots())
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			msgs = append(msgs, s)
		}
		files, err := envoy.SDSFiles(role, goldenCreds)
		if err != nil {
			t.Fatal(err)
		}
		for _, data := range files {
			m := &discovery.DiscoveryResponse{}
			if err := protojson.Unmarshal(data, m); err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, m)
		}
		seen := map[string]bool{}
		for _, m := range msgs {
			validateDeep(t, m.ProtoReflect(), string(m.ProtoReflect().Descriptor().Name()), seen)
		}
		want := map[envoy.Role][]string{
			envoy.Client: {"TcpProxy", "UpstreamTlsContext", "HttpProtocolOptions", "Secret", "Bootstrap", "Listener", "Cluster"},
			envoy.Engine: {"TcpProxy", "DownstreamTlsContext", "TlsInspector", "HttpConnectionManager", "HealthCheck", "Router", "HttpProtocolOptions", "Secret"},
		}[role]
		for _, name := range want {
			if !seen[name] {
				t.Errorf("%s: no %s validated; validated %v", role, name, keys(seen))
			}
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// validateDeep runs ValidateAll on m and every message within it, Any
// fields unpacked.
func validateDeep(t *testing.T, m protoreflect.Message, path string, seen map[string]bool) {
	t.Helper()
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("%s: unpack %s: %v", path, a.GetTypeUrl(), err)
		}
		validateDeep(t, inner.ProtoReflect(), path+"("+string(inner.ProtoReflect().Descriptor().Name())+")", seen)
		return
	}
	if v, ok := m.Interface().(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		seen[string(m.Descriptor().Name())] = true
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsList():
			for i := 0; i < v.List().Len(); i++ {
				validateDeep(t, v.List().Get(i).Message(), p, seen)
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					validateDeep(t, mv.Message(), p+"["+k.String()+"]", seen)
					return true
				})
			}
		default:
			validateDeep(t, v.Message(), p, seen)
		}
		return true
	})
}

func TestBootstrapRoundTripsThroughProtojson(t *testing.T) {
	for _, role := range []envoy.Role{envoy.Client, envoy.Engine} {
		c := goldenConfig(t, role)
		for mode, build := range map[string]func() (*bootstrap.Bootstrap, error){
			"creds": func() (*bootstrap.Bootstrap, error) { return c.StaticBootstrap(goldenCreds) },
			"xds":   func() (*bootstrap.Bootstrap, error) { return c.XDSBootstrap(goldenXDS) },
		} {
			b, err := build()
			if err != nil {
				t.Fatal(err)
			}
			out := marshal(t, b, &bootstrap.Bootstrap{})
			var back bootstrap.Bootstrap
			if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(out, &back); err != nil {
				t.Fatalf("%s/%s: the written bootstrap does not read back: %v", role, mode, err)
			}
			if !proto.Equal(b, &back) {
				t.Fatalf("%s/%s: the bootstrap reads back different", role, mode)
			}
			if err := back.ValidateAll(); err != nil {
				t.Fatalf("%s/%s: read back, the bootstrap fails validation: %v", role, mode, err)
			}
		}
	}
}

func TestConfigMistakesAreRefusedWithTheFix(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  envoy.Config
		want string
	}{
		{"client without gateway", envoy.Config{Role: envoy.Client, Listen: "127.0.0.1:9080"}, "--gateway HOST:PORT"},
		{"gateway without port", envoy.Config{Role: envoy.Client, Listen: "127.0.0.1:9080", Gateway: "gw.example.com"}, "want HOST:PORT"},
		{"listen on a name", envoy.Config{Role: envoy.Client, Listen: "localhost:9080", Gateway: "gw:1"}, "use 127.0.0.1"},
		{"listen on port 0", envoy.Config{Role: envoy.Client, Listen: "127.0.0.1:0", Gateway: "gw:1"}, "want 1-65535"},
		{"relative socket", envoy.Config{Role: envoy.Client, Listen: "unix://envoy.sock", Gateway: "gw:1"}, "unix:///ABSOLUTE/PATH"},
		{"no listen", envoy.Config{Role: envoy.Client, Gateway: "gw:1"}, "listener address is required"},
		{"engine without upstream", envoy.Config{Role: envoy.Engine, Listen: "0.0.0.0:8372"}, "--upstream unix:///PATH"},
		{"engine on a socket", envoy.Config{Role: envoy.Engine, Listen: "unix:///run/e.sock", Upstream: "unix:///run/b.sock"}, "where the gateway can dial it"},
		{"engine with gateway", envoy.Config{Role: envoy.Engine, Listen: "0.0.0.0:8372", Upstream: "unix:///run/b.sock", Gateway: "gw:1"}, "drop --gateway"},
		{"unknown role", envoy.Config{Role: "server", Listen: "127.0.0.1:1"}, "want client or engine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestInvalidResourceIsRefusedByTheGeneratedValidator: a gateway name
// longer than SNI allows (255 bytes) breaks a rule of Envoy's API; the
// configuration is refused before anything is written or served.
func TestInvalidResourceIsRefusedByTheGeneratedValidator(t *testing.T) {
	c := envoy.Config{Role: envoy.Client, Listen: "127.0.0.1:9080", Gateway: strings.Repeat("a", 300) + ":8443"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	_, err := c.StaticBootstrap(goldenCreds)
	if err == nil || !strings.Contains(err.Error(), "Sni") {
		t.Fatalf("StaticBootstrap with a 300-byte SNI = %v, want the validator's refusal", err)
	}
	if _, err := c.Clusters(envoy.Secrets{}); err == nil {
		t.Fatal("Clusters with a 300-byte SNI passed validation")
	}
}
