package wire

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestWriteThenParseRoundTrips(t *testing.T) {
	tests := []struct {
		name string
		in   Event
		line string // what Write puts on the wire, newline included
		out  Event  // what Parse gives back
	}{
		{
			name: "waking with state",
			in:   Event{Kind: Waking, Engine: "eng-1", State: "starting", Elapsed: 1500 * time.Millisecond},
			line: "waking eng-1 starting 1500 \n",
			out:  Event{Kind: Waking, Engine: "eng-1", State: "starting", Elapsed: 1500 * time.Millisecond},
		},
		{
			name: "ready without state is sent as a dash",
			in:   Event{Kind: Ready, Engine: "eng-1", Elapsed: 42 * time.Millisecond},
			line: "ready eng-1 - 42 \n",
			out:  Event{Kind: Ready, Engine: "eng-1", Elapsed: 42 * time.Millisecond},
		},
		{
			name: "error message keeps its spaces",
			in:   Event{Kind: Failed, Engine: "e", State: "stopped", Message: "engine did not start: exit 1"},
			line: "error e stopped 0 engine did not start: exit 1\n",
			out:  Event{Kind: Failed, Engine: "e", State: "stopped", Message: "engine did not start: exit 1"},
		},
		{
			name: "a policy refusal carries the gateway's words",
			in:   Event{Kind: Refused, Engine: "-", Message: "repository evil/app is not allowed by the gateway's policy"},
			line: "refused - - 0 repository evil/app is not allowed by the gateway's policy\n",
			out:  Event{Kind: Refused, Engine: "-", Message: "repository evil/app is not allowed by the gateway's policy"},
		},
		{
			name: "newlines in a message become spaces",
			in:   Event{Kind: Failed, Engine: "e", Message: "line one\nline two\n"},
			line: "error e - 0 line one line two \n",
			out:  Event{Kind: Failed, Engine: "e", Message: "line one line two "},
		},
		{
			name: "elapsed is truncated to whole milliseconds",
			in:   Event{Kind: Waking, Engine: "e", State: "s", Elapsed: 2*time.Second + 999*time.Microsecond},
			line: "waking e s 2000 \n",
			out:  Event{Kind: Waking, Engine: "e", State: "s", Elapsed: 2 * time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, tt.in); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if got := buf.String(); got != tt.line {
				t.Fatalf("Write wrote %q, want %q", got, tt.line)
			}
			got, err := Parse(strings.TrimSuffix(buf.String(), "\n"))
			if err != nil {
				t.Fatalf("Parse(%q): %v", buf.String(), err)
			}
			if got != tt.out {
				t.Fatalf("Parse = %+v, want %+v", got, tt.out)
			}
			// The same through a Reader, as the connect side reads it.
			got, err = NewReader(strings.NewReader(tt.line)).Next()
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if got != tt.out {
				t.Fatalf("Next = %+v, want %+v", got, tt.out)
			}
		})
	}
}

func TestParseAcceptsLineWithoutMessage(t *testing.T) {
	got, err := Parse("waking eng-1 - 7")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Event{Kind: Waking, Engine: "eng-1", Elapsed: 7 * time.Millisecond}
	if got != want {
		t.Fatalf("Parse = %+v, want %+v", got, want)
	}
}

func TestParseRejectsMalformedLines(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		wantErr string
	}{
		{"empty", "", "malformed line"},
		{"too few fields", "waking eng-1 starting", "malformed line"},
		{"kind only", "ready", "malformed line"},
		{"unknown kind", "sleeping eng-1 - 5 ", `unknown event "sleeping"`},
		{"kind is case sensitive", "READY eng-1 - 5 ", "unknown event"},
		{"negative elapsed", "waking eng-1 - -5 ", `bad elapsed time "-5"`},
		{"non-numeric elapsed", "waking eng-1 - soon ", `bad elapsed time "soon"`},
		{"fractional elapsed", "waking eng-1 - 1.5 ", "bad elapsed time"},
		{"elapsed beyond int64", "waking eng-1 - 99999999999999999999 ", "bad elapsed time"},
		{"elapsed overflowing a Duration", "waking eng-1 - 9223372036854775807 ", "bad elapsed time"},
		{"double space shifts fields", "waking eng-1  starting 5", "bad elapsed time"},
		{"long garbage is truncated in the error", strings.Repeat("x", 500) + " a b 1", "unknown event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Parse(tt.line)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tt.line, e)
			}
			if !strings.HasPrefix(err.Error(), "wake protocol: ") {
				t.Errorf("error %q does not name the wake protocol", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if len(err.Error()) > 200 {
				t.Errorf("error is %d bytes long; the offending text should be truncated: %q", len(err.Error()), err)
			}
		})
	}
}

func TestParseRejectsElapsedThatOverflowsDuration(t *testing.T) {
	largest := int64(math.MaxInt64 / int64(time.Millisecond))
	e, err := Parse("waking e - " + strconv.FormatInt(largest, 10) + " ")
	if err != nil {
		t.Fatalf("largest representable elapsed rejected: %v", err)
	}
	if e.Elapsed < 0 || e.Elapsed.Milliseconds() != largest {
		t.Fatalf("Elapsed = %v (%d ms), want %d ms", e.Elapsed, e.Elapsed.Milliseconds(), largest)
	}
	if e, err := Parse("waking e - " + strconv.FormatInt(largest+1, 10) + " "); err == nil {
		t.Fatalf("elapsed of %d ms accepted as %v; it does not fit a time.Duration", largest+1, e.Elapsed)
	}
}

func TestReaderNextReadsSuccessiveEvents(t *testing.T) {
	var buf bytes.Buffer
	events := []Event{
		{Kind: Waking, Engine: "e", State: "stopped", Elapsed: 0},
		{Kind: Waking, Engine: "e", State: "starting", Elapsed: time.Second},
		{Kind: Ready, Engine: "e", Elapsed: 2 * time.Second},
	}
	for _, e := range events {
		if err := Write(&buf, e); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	r := NewReader(&buf)
	for i, want := range events {
		got, err := r.Next()
		if err != nil {
			t.Fatalf("Next #%d: %v", i, err)
		}
		if got != want {
			t.Fatalf("Next #%d = %+v, want %+v", i, got, want)
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next after the last event: err = %v, want io.EOF", err)
	}
}

func TestReaderNextRejectsMalformedLine(t *testing.T) {
	r := NewReader(strings.NewReader("hello there\n"))
	if e, err := r.Next(); err == nil || !strings.Contains(err.Error(), "malformed line") {
		t.Fatalf("Next = %+v, %v; want a malformed line error", e, err)
	}
}

func TestReaderNextDoesNotParseTruncatedFinalLine(t *testing.T) {
	// A peer that dies mid-line must not be taken at its (partial) word.
	r := NewReader(strings.NewReader("ready e - 5"))
	if e, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next = %+v, %v; want io.EOF for a line without its newline", e, err)
	}
}

func TestReaderNextRejectsOverlongLine(t *testing.T) {
	long := "error e - 0 " + strings.Repeat("x", maxLine) + "\n"
	r := NewReader(strings.NewReader(long))
	e, err := r.Next()
	if err == nil {
		t.Fatalf("Next accepted a %d-byte line: %+v", len(long), e)
	}
	if !strings.Contains(err.Error(), "line longer than") {
		t.Fatalf("Next error = %q, want it to say the line is too long", err)
	}
}

func TestReaderNextAcceptsLineUpToLimit(t *testing.T) {
	prefix := "error e - 0 "
	msg := strings.Repeat("x", maxLine-len(prefix)-1) // newline makes maxLine
	line := prefix + msg + "\n"
	if len(line) != maxLine {
		t.Fatalf("test line is %d bytes, want %d", len(line), maxLine)
	}
	e, err := NewReader(strings.NewReader(line)).Next()
	if err != nil {
		t.Fatalf("Next rejected a %d-byte line: %v", len(line), err)
	}
	if e.Message != msg {
		t.Fatalf("Message has %d bytes, want %d", len(e.Message), len(msg))
	}
}

var fuzzSeeds = []string{
	"waking eng-1 starting 1500 ",
	"ready eng-1 - 42 ",
	"error e stopped 0 engine did not start: exit 1",
	"waking e - 7",
	"waking   5",
	"ready e - +5 ",
	"ready e - 007 x",
	"error e - 0 a\rb",
	"waking e - -1 ",
	"waking e - 9223372036854775807 ",
	"waking e - 9223372036854 ",
	"sleeping e - 5 ",
	"waking e\ns - 5 m\nn",
	"",
	" ",
	"error",
}

// FuzzParse checks that Parse never panics and that whatever it accepts,
// Write sends in a form Parse reads back to the same event.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		e, err := Parse(line)
		if err != nil {
			if e != (Event{}) {
				t.Fatalf("Parse(%q) returned %+v alongside error %v", line, e, err)
			}
			return
		}
		checkAccepted(t, line, e)
	})
}

// FuzzReaderNext feeds a Reader arbitrary bytes: it must not panic, must end
// with an error, and every event it yields must obey the same invariants.
func FuzzReaderNext(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s + "\n"))
	}
	f.Add([]byte("waking e s 1 \nready e - 2 \n"))
	// No over-long seed: minimizing the large inputs it breeds stalls the
	// fuzzer for a minute at a time. TestReaderNextRejectsOverlongLine
	// covers that path.
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		// Each successful Next consumes at least one byte (its newline).
		for i := 0; i <= len(data); i++ {
			e, err := r.Next()
			if err != nil {
				return
			}
			checkAccepted(t, "", e)
			if strings.Contains(e.Engine+e.State+e.Message, "\n") {
				t.Fatalf("Next yielded an event spanning lines: %+v", e)
			}
		}
		t.Fatalf("Reader yielded more events than the %d input bytes allow", len(data))
	})
}

func checkAccepted(t *testing.T, line string, e Event) {
	t.Helper()
	switch e.Kind {
	case Waking, Ready, Failed, Refused:
	default:
		t.Fatalf("Parse(%q) accepted unknown kind %q", line, e.Kind)
	}
	if e.Elapsed < 0 {
		t.Fatalf("Parse(%q) gave negative elapsed %v", line, e.Elapsed)
	}
	if e.Elapsed%time.Millisecond != 0 {
		t.Fatalf("Parse(%q) gave elapsed %v, not whole milliseconds", line, e.Elapsed)
	}
	if strings.Contains(e.Engine, " ") || strings.Contains(e.State, " ") {
		t.Fatalf("Parse(%q) gave a field with a space: %+v", line, e)
	}
	var buf bytes.Buffer
	if err := Write(&buf, e); err != nil {
		t.Fatalf("Write(%+v): %v", e, err)
	}
	out := buf.String()
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("Write(%+v) = %q, not newline-terminated", e, out)
	}
	again, err := Parse(strings.TrimSuffix(out, "\n"))
	if err != nil {
		t.Fatalf("Parse(%q) accepted %+v, but Parse of its Write %q fails: %v", line, e, out, err)
	}
	if again.Kind != e.Kind || again.Engine != e.Engine || again.State != e.State || again.Elapsed != e.Elapsed {
		t.Fatalf("round trip changed the event:\n first  %+v\n second %+v\n via %q", e, again, out)
	}
	if want := strings.ReplaceAll(e.Message, "\n", " "); again.Message != want {
		t.Fatalf("round trip message = %q, want %q", again.Message, want)
	}
}
