package engine

import (
	"io"
	"os"
	"strings"

	"github.com/wakegate/wakegate/internal/childenv"
)

// A failed engine's last words: the lines it wrote to its logs since it was
// started, so that a client waiting for a wake hears why the engine died
// (not root, no runc, a bad buildkitd.toml) rather than a timeout, and
// nobody has to find buildkitd.log on the gateway's machine first.
const (
	lastWordsLines = 10      // at most this many lines
	lastWordsBytes = 2 << 10 // and at most this many bytes
	lastWordsRead  = 64 << 10
)

// logMark is a log file and its size when the engine was started: what
// follows is this run's.
type logMark struct {
	path string
	off  int64
}

func markLog(path string) logMark {
	m := logMark{path: path}
	if fi, err := os.Stat(path); err == nil {
		m.off = fi.Size()
	}
	return m
}

// lines returns at most n of the last non-empty lines written since the mark.
func (m logMark) lines(n int) []string {
	f, err := os.Open(m.path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() <= m.off {
		return nil
	}
	from := max(m.off, fi.Size()-lastWordsRead)
	b, err := io.ReadAll(io.NewSectionReader(f, from, fi.Size()-from))
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out[max(0, len(out)-n):]
}

// lastWords joins the last lines of each log (the engine process's first:
// it says why it failed; then the supervisor's) on one line, " | " between
// lines, with secrets blanked, bounded in lines and bytes.
func lastWords(s childenv.Scrubber, logs ...logMark) string {
	var lines []string
	for _, m := range logs {
		lines = append(lines, m.lines(lastWordsLines/len(logs))...)
	}
	text := s.Scrub(strings.Join(lines, " | "))
	if len(text) > lastWordsBytes {
		text = "…" + text[len(text)-lastWordsBytes+len("…"):]
	}
	return text
}
