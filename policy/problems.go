package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Problem is one thing wrong with a policy file.
type Problem struct {
	Line, Col int // 1-based; Line 0 is the file as a whole, Col 0 the whole line
	Msg       string
}

// Problems is every problem Parse found in a file: the error Parse and Load
// return when a file cannot be used.
type Problems struct {
	Source string
	List   []Problem
}

// Error prints one "SOURCE:LINE: message" line per problem ("SOURCE:
// message" for the file as a whole), in the order of the file.
func (e *Problems) Error() string {
	var b strings.Builder
	for i, p := range e.List {
		if i > 0 {
			b.WriteByte('\n')
		}
		if p.Line > 0 {
			fmt.Fprintf(&b, "%s:%d: %s", e.Source, p.Line, p.Msg)
		} else {
			fmt.Fprintf(&b, "%s: %s", e.Source, p.Msg)
		}
	}
	return b.String()
}

// problems collects Problems as a file is read.
type problems []Problem

func (ps *problems) add(line, col int, format string, args ...any) {
	*ps = append(*ps, Problem{Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
}

// err is nil when there are no problems, else a *Problems in file order,
// whole-file problems last, each reported once.
func (ps problems) err(source string) error {
	if len(ps) == 0 {
		return nil
	}
	list := slices.Clone([]Problem(ps))
	// Line 0 sorts last: a summary of the file reads best after the details.
	order := func(l int) int {
		if l == 0 {
			return int(^uint(0) >> 1)
		}
		return l
	}
	slices.SortStableFunc(list, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(order(a.Line), order(b.Line)), cmp.Compare(a.Col, b.Col))
	})
	return &Problems{Source: source, List: slices.Compact(list)}
}
