package wire

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// ALPN protocol names.
const (
	ProtoProxy = "wakegate-proxy/1"
	ProtoWake  = "wakegate-wake/1"
	// ProtoAhead is a stream made ahead of need (connect's spare
	// connections): the gateway proxies it as ProtoProxy, but chooses and
	// wakes its engine only at the client's first byte. Until then it is
	// no engine's client: it wakes none and keeps none awake. The client
	// must speak first, as BuildKit's gRPC and Dagger's HTTP do. Before
	// anything else the gateway sends one status byte: AheadServed once it
	// took the client's first byte and serves the stream, AheadNotServed
	// when it will not (closed unused, shutting down, or refused): then
	// none of the client's bytes reached an engine, and they may be sent
	// again on a new connection.
	ProtoAhead = "wakegate-ahead/1"
)

// A connection made ahead of need's status byte (ProtoAhead).
const (
	AheadNotServed byte = 0
	AheadServed    byte = 1
)

// maxLine bounds one protocol line: a gateway that sends more is broken.
const maxLine = 4 << 10

// Event is one line of a wake conversation.
type Event struct {
	Kind    string        // "waking", "ready", "error" or "refused"
	Engine  string        // engine id
	State   string        // engine state while waking
	Elapsed time.Duration // since the wake request arrived
	Message string        // error text for Kind "error"
}

// Event kinds.
const (
	Waking = "waking"
	Ready  = "ready"
	Failed = "error"
	// Refused: the gateway will not serve this client (its policy); the
	// message says why, in words for a person. Retrying cannot help.
	Refused = "refused"
)

// Write sends e as one line: "KIND ENGINE STATE ELAPSED_MS MESSAGE".
func Write(w io.Writer, e Event) error {
	state := e.State
	if state == "" {
		state = "-"
	}
	msg := strings.ReplaceAll(e.Message, "\n", " ")
	_, err := fmt.Fprintf(w, "%s %s %s %d %s\n", e.Kind, e.Engine, state, e.Elapsed.Milliseconds(), msg)
	return err
}

// Reader reads events written by Write.
type Reader struct{ r *bufio.Reader }

// NewReader wraps r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, maxLine)} }

// Next reads one event. It rejects lines longer than the protocol allows or
// that do not parse, rather than guessing.
func (r *Reader) Next() (Event, error) {
	line, err := r.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return Event{}, fmt.Errorf("wake protocol: line longer than %d bytes with its newline", maxLine)
	}
	if err != nil {
		return Event{}, err
	}
	return Parse(strings.TrimSuffix(string(line), "\n"))
}

// Parse decodes one line (without its newline).
func Parse(line string) (Event, error) {
	f := strings.SplitN(line, " ", 5)
	if len(f) < 4 {
		return Event{}, fmt.Errorf("wake protocol: malformed line %q", truncate(line))
	}
	switch f[0] {
	case Waking, Ready, Failed, Refused:
	default:
		return Event{}, fmt.Errorf("wake protocol: unknown event %q", truncate(f[0]))
	}
	ms, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil || ms < 0 || ms > math.MaxInt64/int64(time.Millisecond) {
		return Event{}, fmt.Errorf("wake protocol: bad elapsed time %q", truncate(f[3]))
	}
	e := Event{Kind: f[0], Engine: f[1], State: f[2], Elapsed: time.Duration(ms) * time.Millisecond}
	if e.State == "-" {
		e.State = ""
	}
	if len(f) == 5 {
		e.Message = f[4]
	}
	return e, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
