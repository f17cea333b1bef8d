package layering

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// graph is the module's packages (relative paths) and each one's
// dependencies (full import paths), from go list.
type graph struct {
	module string
	deps   map[string][]string
}

func loadGraph(t *testing.T, root string) graph {
	t.Helper()
	mod, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	cmd := exec.Command("go", "list", "-deps=false", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./...: %v\n%s", err, stderr.String())
	}
	g := graph{module: strings.TrimSpace(string(mod)), deps: map[string][]string{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		rel, ok := g.rel(f[0])
		if !ok {
			continue
		}
		g.deps[rel] = f[1:]
	}
	return g
}

// rel turns an import path of the module into its relative path.
func (g graph) rel(path string) (string, bool) {
	if path == g.module {
		return ".", true
	}
	rest, ok := strings.CutPrefix(path, g.module+"/")
	return rest, ok
}

// within says whether rel is pkg or one of its sub-packages.
func within(rel, pkg string) bool { return rel == pkg || strings.HasPrefix(rel, pkg+"/") }

// TestEachPackageImportsWhatItsDocSays: the rule each doc.go states holds
// in the build's real dependency graph.
func TestEachPackageImportsWhatItsDocSays(t *testing.T) {
	root := filepath.Join("..", "..")
	g := loadGraph(t, root)
	known := map[string]bool{}
	for rel := range g.deps {
		known[rel] = true
	}
	checked := 0
	for pkg := range g.deps {
		src, err := os.ReadFile(filepath.Join(root, pkg, "doc.go"))
		if err != nil {
			continue
		}
		r := ParseRule(string(src), known)
		if r.Forbidden == nil && !r.NoOther && r.Only == nil && !r.StdlibOnly {
			continue
		}
		checked++
		for _, dep := range g.deps[pkg] {
			drel, ours := g.rel(dep)
			switch {
			case r.StdlibOnly && (ours || strings.Contains(strings.SplitN(dep, "/", 2)[0], ".")):
				t.Errorf("%s: its doc.go says standard library only, but it depends on %s", pkg, dep)
			case !ours:
			case within(drel, pkg):
			case r.NoOther:
				t.Errorf("%s: its doc.go says no other wakegate package, but it depends on %s", pkg, drel)
			case r.Only != nil && !slices.ContainsFunc(r.Only, func(o string) bool { return within(drel, o) }):
				t.Errorf("%s: its doc.go says it imports only %v, but it depends on %s", pkg, r.Only, drel)
			case slices.ContainsFunc(r.Forbidden, func(f string) bool { return within(drel, f) }):
				t.Errorf("%s: its doc.go says it must not import %v, but it depends on %s", pkg, r.Forbidden, drel)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d packages state an import rule in doc.go; the parser likely missed some", checked)
	}
}

// TestTheRoutingCoreLinksNoCA: the gateway and engine read identities
// through the identity leaf, so the CA server (smallstep) is not linked
// into them.
func TestTheRoutingCoreLinksNoCA(t *testing.T) {
	g := loadGraph(t, filepath.Join("..", ".."))
	for _, pkg := range []string{"gateway", "engine"} {
		deps, ok := g.deps[pkg]
		if !ok {
			t.Fatalf("package %s not found", pkg)
		}
		for _, d := range deps {
			if strings.HasPrefix(d, "github.com/smallstep/") || strings.HasPrefix(d, "go.step.sm/") {
				t.Errorf("%s depends on %s: the CA is linked into the routing core", pkg, d)
			}
		}
	}
}

func TestParseRuleReadsTheDocsPhrasing(t *testing.T) {
	known := map[string]bool{"gateway": true, "engine": true, "connect": true, "cmd": true, "identity": true, "fly": true}
	for _, tc := range []struct {
		doc  string
		want Rule
	}{
		{"// It must not import gateway, engine or connect: they consume it.\npackage x",
			Rule{Forbidden: []string{"gateway", "engine", "connect"}}},
		{"// Local satisfies it; engine must not import\n// gateway, connect or cmd.\npackage x",
			Rule{Forbidden: []string{"gateway", "connect", "cmd"}}},
		{"// It must not import any other wakegate package.", Rule{NoOther: true}},
		{"// it must not import other\n// wakegate packages.", Rule{NoOther: true}},
		{"// It imports only identity, the TOML library (go-toml) and doublestar: no\n// other wakegate package.",
			Rule{Only: []string{"identity"}}},
		{"// It is a leaf: the standard library only.", Rule{StdlibOnly: true}},
		{"// It imports gateway; nothing imports it but cmd.", Rule{}},
	} {
		got := ParseRule(tc.doc, known)
		if !slices.Equal(got.Forbidden, tc.want.Forbidden) || got.NoOther != tc.want.NoOther ||
			!slices.Equal(got.Only, tc.want.Only) || (got.Only == nil) != (tc.want.Only == nil) || got.StdlibOnly != tc.want.StdlibOnly {
			t.Errorf("ParseRule(%q) = %+v, want %+v", tc.doc, got, tc.want)
		}
	}
}
