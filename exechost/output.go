package exechost

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// lastLine returns the last non-empty line of out, trimmed.
func lastLine(out []byte) (string, error) {
	lines := strings.Split(string(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l, nil
		}
	}
	return "", errors.New("start command printed no address; it must print host:port as its last line")
}

// checkHostPort accepts host:port with a non-empty host and a numeric port,
// which is what the gateway will dial.
func checkHostPort(addr string) error {
	bad := func(why string) error {
		return fmt.Errorf("start command printed %q as its last line: %s; it must print host:port as its last line", addr, why)
	}
	if strings.Contains(addr, "://") {
		return bad("print host:port without a scheme")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return bad(err.Error())
	}
	if host == "" {
		return bad("no host")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return bad("port is not a number from 1 to 65535")
	}
	return nil
}

// errTail returns at most n bytes from the end of s, trimmed, starting at
// a line boundary when there is one so that no line is quoted cut.
func errTail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
		s = s[i+1:]
	}
	return "…" + strings.TrimSpace(s)
}

// tailBuffer keeps the last execOutputCap bytes written to it. It grows to
// twice that before moving the tail down, so a CLI that writes a byte at a
// time costs amortised constant work per byte. os/exec writes each of
// stdout and stderr from its own goroutine, and they are read only after
// Wait, so it needs no lock.
type tailBuffer struct {
	b         []byte
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > execOutputCap {
		p = p[len(p)-execOutputCap:]
		t.b = t.b[:0]
		t.truncated = true
	}
	if len(t.b)+len(p) > 2*execOutputCap {
		t.b = t.b[:copy(t.b, t.b[len(t.b)-execOutputCap:])]
		t.truncated = true
	}
	t.b = append(t.b, p...)
	return n, nil
}

// Bytes returns the last execOutputCap bytes written, from a line boundary
// if the front was cut.
func (t *tailBuffer) Bytes() []byte {
	b, cut := t.b, t.truncated
	if len(b) > execOutputCap {
		b, cut = b[len(b)-execOutputCap:], true
	}
	if cut {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			return b[i+1:]
		}
	}
	return b
}
