package layering

import (
	"regexp"
	"strings"
)

// Rule is what one package's doc.go says about its imports.
type Rule struct {
	// Forbidden are wakegate packages (paths relative to the module, e.g.
	// "gateway", "cmd") the package must not depend on.
	Forbidden []string
	// NoOther: it must not depend on any other wakegate package.
	NoOther bool
	// Only, when set, are the only wakegate packages it may depend on.
	Only []string
	// StdlibOnly: it depends on the standard library alone.
	StdlibOnly bool
}

var (
	mustNot   = regexp.MustCompile(`(?i)must not import ([^.:;]+)`)
	onlyRe    = regexp.MustCompile(`(?i)\bimports only ([^.:;]+)`)
	stdlibRe  = regexp.MustCompile(`(?i)the standard library only`)
	anyOther  = regexp.MustCompile(`(?i)\b(any )?other wakegate packages?\b`)
	listSplit = regexp.MustCompile(`,\s*|\s+or\s+|\s+and\s+`)
)

// ParseRule reads the import rule from a doc.go's comment text. known are
// the module's package paths (relative), used to tell package names from
// the prose around them ("the TOML library", "they consume it").
func ParseRule(doc string, known map[string]bool) Rule {
	text := strings.Join(strings.Fields(commentText(doc)), " ")
	var r Rule
	for _, m := range mustNot.FindAllStringSubmatch(text, -1) {
		if anyOther.MatchString(m[1]) {
			r.NoOther = true
		}
		r.Forbidden = append(r.Forbidden, names(m[1], known)...)
	}
	if m := onlyRe.FindStringSubmatch(text); m != nil {
		r.Only = names(m[1], known)
		if r.Only == nil {
			r.Only = []string{}
		}
	}
	r.StdlibOnly = stdlibRe.MatchString(text)
	return r
}

// names picks the package names out of a list in prose.
func names(list string, known map[string]bool) []string {
	var out []string
	for _, w := range listSplit.Split(list, -1) {
		w = strings.Trim(strings.TrimSpace(w), "`'\"")
		w = strings.TrimSuffix(w, " packages")
		w = strings.TrimSuffix(w, " package")
		if known[w] {
			out = append(out, w)
		}
	}
	return out
}

// commentText is the text of a file's // comments.
func commentText(src string) string {
	var b strings.Builder
	for _, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "//"); ok {
			b.WriteString(rest)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
