package policy

import (
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// The decoder says what a file holds but not where; layout walks the same
// bytes with go-toml's parser to find the line of each rule and of each key
// in it, so that every problem names the line to fix.

// pos is a place in the file, 1-based.
type pos struct{ line, col int }

// ruleLayout is where one rule and its keys are.
type ruleLayout struct {
	at   pos
	keys map[string]pos // by field key: where it is first set
}

// layout is where a file's rules are, in the order the decoder lists them,
// plus what is wrong with how they are written that the decoder accepts.
type layout struct {
	rules []ruleLayout
	// inline are the line spans of 'allow = [...]' arrays: the decoder names
	// an unknown key inside one without the allow prefix.
	inline   [][2]int
	problems problems
}

// keyPart is one part of a dotted key.
type keyPart struct {
	name string
	at   pos
}

// walker reads a layout from a parser's expressions.
type walker struct {
	p unstable.Parser
	l layout
}

// readLayout indexes data, which the decoder has already parsed without a
// syntax error.
func readLayout(data []byte) *layout {
	w := &walker{}
	w.p.Reset(data)
	cur := -1   // index in w.l.rules of the [[allow]] table keys now go to, or -1
	top := true // no table header yet: keys are top-level
	for w.p.NextExpression() {
		e := w.p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			top, cur = false, -1
			parts := w.key(e)
			if len(parts) == 0 || !strings.EqualFold(parts[0].name, "allow") {
				continue // not ours: the decoder reports an unknown table
			}
			if parts[0].name != "allow" {
				w.l.problems.add(parts[0].at.line, parts[0].at.col, "write %q in lower case: allow", parts[0].name)
			}
			if len(parts) == 1 {
				if e.Kind == unstable.Table {
					w.l.problems.add(parts[0].at.line, parts[0].at.col, "[allow] is a single table: write [[allow]], with double brackets, for each rule")
				}
				w.l.rules = append(w.l.rules, ruleLayout{at: parts[0].at, keys: map[string]pos{}})
				cur = len(w.l.rules) - 1
				continue
			}
			// [allow.KEY] makes KEY of the last rule a table: the type check
			// reports it, at this line.
			if len(w.l.rules) > 0 {
				w.l.set(len(w.l.rules)-1, parts[1])
			}
		case unstable.KeyValue:
			parts := w.key(e)
			switch {
			case len(parts) == 0:
			case cur >= 0:
				w.l.set(cur, parts[0])
			case top && strings.EqualFold(parts[0].name, "allow"):
				w.topAllow(e, parts)
			}
		}
	}
	return &w.l
}

func (w *walker) at(n *unstable.Node) pos {
	s := w.p.Shape(n.Raw).Start
	return pos{s.Line, s.Column}
}

// key is the dotted key of a table header or key/value.
func (w *walker) key(n *unstable.Node) []keyPart {
	var parts []keyPart
	for it := n.Key(); it.Next(); {
		parts = append(parts, keyPart{string(it.Node().Data), w.at(it.Node())})
	}
	return parts
}

// topAllow indexes a top-level allow key: 'allow = [{...}, ...]' is the
// inline form of [[allow]] tables; the other forms the decoder accepts make
// one rule at most and are refused.
func (w *walker) topAllow(e *unstable.Node, parts []keyPart) {
	v := e.Value()
	if len(parts) > 1 || v.Kind == unstable.InlineTable {
		w.l.problems.add(parts[0].at.line, parts[0].at.col, "write each rule as an [[allow]] table")
		return
	}
	if v.Kind != unstable.Array {
		return // the decoder reports the type
	}
	for it := v.Children(); it.Next(); {
		t := it.Node()
		if t.Kind != unstable.InlineTable {
			continue
		}
		w.l.rules = append(w.l.rules, ruleLayout{at: w.at(t), keys: map[string]pos{}})
		for kv := t.Children(); kv.Next(); {
			if kv.Node().Kind != unstable.KeyValue {
				continue
			}
			if ks := w.key(kv.Node()); len(ks) > 0 {
				w.l.set(len(w.l.rules)-1, ks[0])
			}
		}
	}
	s := w.p.Shape(e.Raw)
	w.l.inline = append(w.l.inline, [2]int{s.Start.Line, s.End.Line})
}

// set records that rule i sets the key written k, when k is a rule key.
func (l *layout) set(i int, k keyPart) {
	f := lookupField(k.name)
	if f == nil {
		return // the decoder reports an unknown key
	}
	if k.name != f.key {
		l.problems.add(k.at.line, k.at.col, "write %q in lower case: %s", k.name, f.key)
	}
	if _, ok := l.rules[i].keys[f.key]; !ok {
		l.rules[i].keys[f.key] = k.at
	}
}

// inInline reports whether line is inside an 'allow = [...]' array.
func (l *layout) inInline(line int) bool {
	for _, s := range l.inline {
		if line >= s[0] && line <= s[1] {
			return true
		}
	}
	return false
}
