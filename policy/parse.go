package policy

import (
	"bytes"
	"errors"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// document is a policy file as the decoder reads it.
type document struct {
	Allow []ruleValues `toml:"allow"`
}

// ruleValues is one rule as decoded. The fields are 'any' rather than
// string so that a value of the wrong type is reported along with every
// other problem, instead of stopping the decoder at the first.
type ruleValues struct {
	Repository  any `toml:"repository"`
	Owner       any `toml:"owner"`
	Ref         any `toml:"ref"`
	Workflow    any `toml:"workflow"`
	Environment any `toml:"environment"`
	EventName   any `toml:"event_name"`
	Name        any `toml:"name"`
}

// get is the decoded value of key; nil when the rule does not set it.
func (v *ruleValues) get(key string) any {
	switch key {
	case "repository":
		return v.Repository
	case "owner":
		return v.Owner
	case "ref":
		return v.Ref
	case "workflow":
		return v.Workflow
	case "environment":
		return v.Environment
	case "event_name":
		return v.EventName
	case "name":
		return v.Name
	}
	return nil
}

// Parse reads a policy file; source names it in problems. The error is a
// *Problems listing every problem found.
func Parse(source string, data []byte) (*Policy, error) {
	var doc document
	var ps problems
	err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(&doc)
	var strict *toml.StrictMissingError
	var de *toml.DecodeError
	switch {
	case err == nil:
	case errors.As(err, &strict):
		// Unknown keys: the document is otherwise whole, so go on and find
		// the other problems too.
	case errors.As(err, &de):
		// Not TOML, or not the shape of a policy: nothing else can be
		// trusted to have a place.
		line, col := de.Position()
		ps.add(line, col, "%s", decodeMessage(de))
		return nil, ps.err(source)
	default:
		ps.add(0, 0, "%v", err)
		return nil, ps.err(source)
	}

	l := readLayout(data)
	ps = append(ps, l.problems...)
	if strict != nil {
		for _, e := range strict.Errors {
			line, col := e.Position()
			ps.add(line, col, "%s", unknownMessage(e.Key(), strings.HasSuffix(e.Error(), "missing table"), l.inInline(line)))
		}
	}
	if len(l.rules) != len(doc.Allow) {
		// The forms of rule the layout does not follow are reported as
		// problems; this is the backstop that keeps a rule from going
		// unchecked should one slip through.
		if len(ps) == 0 {
			ps.add(0, 0, "cannot tell where each rule is: write each rule as an [[allow]] table")
		}
		return nil, ps.err(source)
	}
	p := &Policy{Source: source, Rules: make([]Rule, 0, len(doc.Allow))}
	for i := range doc.Allow {
		r, rps := checkRule(&doc.Allow[i], &l.rules[i])
		ps = append(ps, rps...)
		p.Rules = append(p.Rules, r)
	}
	if len(p.Rules) == 0 {
		ps.add(0, 0, "no [[allow]] rules: every client would be refused; add one, e.g. [[allow]] with repository = \"acme/*\"")
	}
	if err := ps.err(source); err != nil {
		return nil, err
	}
	return p, nil
}

// decodeMessage says what a decoder error means for a policy file.
func decodeMessage(de *toml.DecodeError) string {
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	if k := de.Key(); len(k) == 1 && strings.EqualFold(k[0], "allow") && strings.HasPrefix(msg, "cannot decode") {
		return "allow must be a list of rules: write each rule as an [[allow]] table"
	}
	return "not valid TOML: " + msg
}

// unknownMessage says what to do about a key or table the format lacks.
func unknownMessage(key []string, table, inInline bool) string {
	if len(key) == 0 {
		return "unknown key"
	}
	name := key[len(key)-1]
	inRule := inInline || len(key) >= 2 && strings.EqualFold(key[0], "allow")
	what := `key "` + name + `"`
	if table {
		what = "table [" + strings.Join(key, ".") + "]"
	}
	if inRule {
		msg := "unknown " + what + " in a rule: "
		if s := suggest(name, ruleKeys()); s != "" {
			return msg + `did you mean "` + s + `"? A rule's keys are ` + keyList() + "."
		}
		return msg + "a rule's keys are " + keyList() + "."
	}
	msg := "unknown " + what
	if suggest(name, []string{"allow"}) != "" || suggestAlias(name) == "allow" {
		return msg + ": did you mean [[allow]]?"
	}
	if s := suggest(name, ruleKeys()); s != "" {
		return msg + `: keys such as ` + s + ` go inside an [[allow]] rule`
	}
	return msg + ": a policy file holds only [[allow]] rules"
}

func ruleKeys() []string {
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	return keys
}
