package policy

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseReadsRulesWithTheirLines(t *testing.T) {
	src := `# who may build
[[allow]]
repository = "acme/*"
ref = "refs/heads/*"

[[allow]]
owner = "Acme"
workflow = "CI"
event_name = "push"
environment = "prod*"

[[allow]]
name = "team-*"
`
	p, err := Parse("policy.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{Line: 2, Repository: "acme/*", Ref: "refs/heads/*"},
		{Line: 6, Owner: "Acme", Workflow: "CI", EventName: "push", Environment: "prod*"},
		{Line: 12, Name: "team-*"},
	}
	if !reflect.DeepEqual(p.Rules, want) || p.Source != "policy.toml" {
		t.Fatalf("Parse = %+v, want %+v from policy.toml", p, want)
	}
}

func TestParseReadsTheInlineFormWithLines(t *testing.T) {
	src := "allow = [\n  { repository = \"acme/app\" },\n  { name = \"ci\" },\n]\n"
	p, err := Parse("p", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{{Line: 2, Repository: "acme/app"}, {Line: 3, Name: "ci"}}
	if !reflect.DeepEqual(p.Rules, want) {
		t.Fatalf("rules = %+v, want %+v", p.Rules, want)
	}
}

func TestParseReportsEachProblemAtItsLine(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string // "LINE: start of message", in order
	}{
		{"no rules", "# nothing yet\n", []string{"0: no [[allow]] rules: every client would be refused"}},
		{"empty file", "", []string{"0: no [[allow]] rules"}},
		{"empty allow array", "allow = []\n", []string{"0: no [[allow]] rules"}},
		{"empty rule", "\n[[allow]]\n", []string{"2: empty rule"}},
		{"oidc keys without repository or owner", "[[allow]]\nref = \"refs/heads/main\"\nworkflow = \"CI\"\n",
			[]string{"1: rule matches any repository on GitHub: add repository or owner"}},
		{"name with oidc keys", "[[allow]]\nname = \"ci\"\nrepository = \"acme/app\"\n",
			[]string{"1: name applies to certificates an operator issued, repository/ref/... to OIDC-enrolled jobs: split into two rules"}},
		{"name with ref only", "[[allow]]\nname = \"ci\"\nref = \"refs/heads/main\"\n", []string{"1: name applies to"}},
		{"invalid glob", "[[allow]]\nrepository = \"acme/[app\"\n", []string{`2: repository "acme/[app" is not a valid pattern`}},
		{"invalid brace", "[[allow]]\nrepository = \"acme/*\"\nref = \"refs/{heads\"\n", []string{`3: ref "refs/{heads" is not a valid pattern`}},
		{"empty value", "[[allow]]\nrepository = \"acme/app\"\nenvironment = \"\"\n", []string{"3: environment is empty"}},
		{"empty name", "[[allow]]\nname = ''\n", []string{"2: name is empty"}},
		{"not a string", "[[allow]]\nrepository = \"acme/app\"\nref = 1\n", []string{`3: ref must be a string in quotes, e.g. ref = "refs/heads/main"`}},
		{"array value", "[[allow]]\nrepository = [\"acme/a\", \"acme/b\"]\n", []string{"2: repository must be a string"}},
		{"sub-table value", "[[allow]]\nname = \"x\"\n[allow.repository]\nx = 1\n", []string{"1: name applies to", "3: repository must be a string"}},
		{"unknown key in a rule", "[[allow]]\nrepository = \"acme/app\"\nrepo = \"acme/app\"\n", []string{`3: unknown key "repo" in a rule: did you mean "repository"?`}},
		{"github claim name", "[[allow]]\nrepository_owner = \"acme\"\n", []string{`1: empty rule`, `2: unknown key "repository_owner" in a rule: did you mean "owner"?`}},
		{"unknown top-level key", "version = 1\n[[allow]]\nname = \"x\"\n", []string{`1: unknown key "version": a policy file holds only [[allow]] rules`}},
		{"misspelt allow", "[[allows]]\nname = \"x\"\n", []string{`1: unknown table [allows]: did you mean [[allow]]?`, "0: no [[allow]] rules"}},
		{"rule key at top level", "repository = \"acme/*\"\n[[allow]]\nname = \"x\"\n", []string{`1: unknown key "repository": keys such as repository go inside an [[allow]] rule`}},
		{"unknown key inline", "allow = [\n  { name = \"x\" },\n  { name = \"y\", nmae = \"z\" },\n]\n", []string{`3: unknown key "nmae" in a rule: did you mean "name"?`}},
		{"single table", "[allow]\nname = \"x\"\n", []string{"1: [allow] is a single table: write [[allow]]"}},
		{"upper-case key", "[[allow]]\nRepository = \"acme/app\"\n", []string{`2: write "Repository" in lower case: repository`}},
		{"repository without owner", "[[allow]]\nrepository = \"app\"\n", []string{`2: repository "app" has no '/'`}},
		{"short ref", "[[allow]]\nrepository = \"acme/app\"\nref = \"main\"\n", []string{`3: ref "main" can never match: GitHub sends the full ref, e.g. "refs/heads/main"`}},
		{"not toml", "[[allow]\nname = \"x\"\n", []string{"1: not valid TOML: expected ']]' to close array table name"}},
		{"duplicate key", "[[allow]]\nname = \"x\"\nname = \"y\"\n", []string{"3: not valid TOML: key name is already defined"}},
		{"allow not a list", "allow = \"acme/*\"\n", []string{"1: allow must be a list of rules"}},
		{"several problems", `[[allow]]
repository = "acme/*"
ref = ""

[[allow]]
workflow = "CI"

[[allow]]
name = "team-["
colour = "blue"

[[allow]]
`, []string{"3: ref is empty", "5: rule matches any repository", `9: name "team-[" is not a valid pattern`, `10: unknown key "colour" in a rule`, "12: empty rule"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("policy.toml", []byte(tc.src))
			var ps *Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Parse = %+v, %v; want *Problems", p, err)
			}
			if p != nil {
				t.Errorf("Parse returned a policy with its problems: %+v", p)
			}
			if len(ps.List) != len(tc.want) {
				t.Fatalf("problems:\n%v\nwant %d: %q", err, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				line, msg, _ := strings.Cut(w, ": ")
				got := ps.List[i]
				if line != strconv.Itoa(got.Line) || !strings.HasPrefix(got.Msg, msg) {
					t.Errorf("problem %d = %d: %s\nwant %s", i, got.Line, got.Msg, w)
				}
			}
		})
	}
}

func TestProblemsPrintOneLinePerProblem(t *testing.T) {
	_, err := Parse("ci.toml", []byte("[[allow]]\n[[allow]]\nname = \"\"\n"))
	want := "ci.toml:1: empty rule: add repository or owner (e.g. repository = \"acme/*\") for OIDC-enrolled jobs, or name for identities an operator issued\n" +
		"ci.toml:3: name is empty, which would match nothing: give a value such as \"team-*\", or remove the key to match any"
	if err == nil || err.Error() != want {
		t.Fatalf("error =\n%v\nwant\n%s", err, want)
	}
	_, err = Parse("ci.toml", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "ci.toml: no [[allow]] rules") {
		t.Fatalf("a whole-file problem = %v, want it without a line", err)
	}
}

func TestLoadNamesTheFileInProblems(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.toml")
	if err := os.WriteFile(path, []byte("[[allow]]\nname = \"ci\"\nfoo = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":3: ") {
		t.Fatalf("Load = %v, want a problem at %s:3", err, path)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file = %v, want ErrNotExist", err)
	}
}
