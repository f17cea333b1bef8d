package policy

import "strings"

// aliases are what people write for a key, from GitHub's claim names and
// other tools' policy files.
var aliases = map[string]string{
	"repo":             "repository",
	"repository_owner": "owner",
	"org":              "owner",
	"organization":     "owner",
	"branch":           "ref",
	"event":            "event_name",
	"env":              "environment",
	"identity":         "name",
	"cn":               "name",
	"rule":             "allow",
	"rules":            "allow",
	"allowed":          "allow",
}

func suggestAlias(name string) string { return aliases[strings.ToLower(name)] }

// suggest is the candidate name most likely meant: an alias, or one within
// two edits; "" when none is close.
func suggest(name string, candidates []string) string {
	if a := suggestAlias(name); a != "" {
		for _, c := range candidates {
			if c == a {
				return a
			}
		}
	}
	best, bestD := "", 3
	for _, c := range candidates {
		if d := distance(strings.ToLower(name), c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b, by byte: keys are
// ASCII.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
