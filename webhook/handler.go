package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Path is where the gateway's CA API serves the webhook.
const Path = "/github/webhook"

// Prewaker wakes, without waiting, the engine that connections of key would
// be placed on, keeping it a grace period for them (the gateway's pool).
// engine is the engine chosen ("" if none can take key now: all are busy
// and running); woke says whether this call began its wake, false when it
// merged into one under way or the engine already runs.
type Prewaker interface {
	Prewake(key string) (engine string, woke bool, err error)
}

// Result is what became of a delivery: its metric label.
type Result string

// Results.
const (
	Woken         Result = "woken"          // the engine's wake began
	Coalesced     Result = "coalesced"      // the engine was waking or running already: no second wake
	Replayed      Result = "replayed"       // a delivery id seen before
	BadSignature  Result = "bad_signature"  // X-Hub-Signature-256 missing, malformed or wrong
	NotAllowed    Result = "not_allowed"    // the policy lets no job of the repository in
	IgnoredEvent  Result = "ignored_event"  // an event other than workflow_job (ping included)
	IgnoredAction Result = "ignored_action" // waiting, completed: nothing to wake
	TooLarge      Result = "too_large"      // a body over MaxBody
	BadRequest    Result = "bad_request"    // not a POST, no delivery id or event, a payload not GitHub's
	Stale         Result = "stale"          // a job older than the replay window: a replay the cache forgot
	Failed        Result = "failed"         // the pre-wake itself failed (the gateway shutting down)
)

// Results lists every Result, for metrics that report each from zero.
var Results = []Result{Woken, Coalesced, Replayed, BadSignature, NotAllowed, IgnoredEvent, IgnoredAction, TooLarge, BadRequest, Stale, Failed}

// Defaults.
const (
	// DefaultMaxBody bounds a delivery's body. GitHub caps payloads at
	// 25 MB, but a workflow_job delivery is a few KB (the repository,
	// organisation and sender objects, the job and its steps): 256 KiB is
	// fifty times that, and what the CA API allows any request, so that the
	// webhook opens no larger hole in the memory its connection cap bounds.
	DefaultMaxBody = 256 << 10
	// DefaultReplayWindow is how long delivery ids are remembered; a
	// delivery about a job created (or started) before it is refused as
	// stale. GitHub delivers within seconds; its "Redeliver" of an old
	// delivery is stale by then too.
	DefaultReplayWindow = time.Hour
	// DefaultReplayMax bounds the ids remembered: a busy organisation's
	// hour of jobs, three deliveries each.
	DefaultReplayMax = 100_000
)

// Config configures a Handler.
type Config struct {
	// Secret is the webhook's secret, as set at GitHub; required.
	Secret []byte
	// Prewaker wakes engines; required.
	Prewaker Prewaker
	// Allow is nil when the policy could let a job of j's repository (and
	// workflow) in; required.
	Allow func(j Job) error
	// Count, if set, counts each delivery's result.
	Count        func(Result)
	MaxBody      int64
	ReplayWindow time.Duration
	ReplayMax    int
	// Now is the wall clock (time.Now when nil): delivery ages and the
	// replay window.
	Now func() time.Time
	Log *slog.Logger
}

// Handler serves GitHub's webhook deliveries.
type Handler struct {
	cfg     Config
	replays *replayCache
	noise   *quietLog
}

// New checks cfg and returns its handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case len(cfg.Secret) == 0:
		return nil, errors.New("webhook: no secret")
	case cfg.Prewaker == nil:
		return nil, errors.New("webhook: no prewaker")
	case cfg.Allow == nil:
		return nil, errors.New("webhook: no policy")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.ReplayWindow <= 0 {
		cfg.ReplayWindow = DefaultReplayWindow
	}
	if cfg.ReplayMax <= 0 {
		cfg.ReplayMax = DefaultReplayMax
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Count == nil {
		cfg.Count = func(Result) {}
	}
	return &Handler{cfg: cfg, replays: newReplayCache(cfg.ReplayWindow, cfg.ReplayMax),
		noise: &quietLog{log: cfg.Log, now: cfg.Now, every: 10 * time.Second}}, nil
}

// maxDeliveryID bounds the X-GitHub-Delivery header kept (a GUID is 36
// characters).
const maxDeliveryID = 100

// ServeHTTP checks a delivery and acts on it. Before its signature is
// checked nothing of it is trusted, logged beyond a bounded rate, or
// remembered.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	remote := r.RemoteAddr
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.unauthenticated(w, http.StatusMethodNotAllowed, BadRequest, remote, "not a POST")
		return
	}
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	if !h.signed(body, r.Header.Get("X-Hub-Signature-256")) {
		h.unauthenticated(w, http.StatusUnauthorized, BadSignature, remote, "X-Hub-Signature-256 missing or wrong")
		return
	}
	// Signed by GitHub (or whoever holds the secret): from here on every
	// decision is logged.
	delivery, event := r.Header.Get("X-GitHub-Delivery"), r.Header.Get("X-GitHub-Event")
	log := h.cfg.Log.With("delivery", truncate(delivery), "event", truncate(event))
	if delivery == "" || len(delivery) > maxDeliveryID || !printable(delivery) || event == "" {
		h.decide(w, log, http.StatusBadRequest, BadRequest, "no X-GitHub-Delivery or X-GitHub-Event header")
		return
	}
	now := h.cfg.Now()
	if h.replays.check(delivery, now) {
		h.decide(w, log, http.StatusOK, Replayed, "delivery id seen before")
		return
	}
	if event != "workflow_job" {
		// "ping" arrives when the webhook is created: its 200 tells the
		// operator the secret matches.
		h.decide(w, log, http.StatusOK, IgnoredEvent, "not a workflow_job event")
		return
	}
	job, err := ParseJob(body)
	if err != nil {
		h.decide(w, log, http.StatusBadRequest, BadRequest, err.Error())
		return
	}
	log = log.With("action", job.Action, "repository", job.Repository, "workflow", job.Workflow, "job", job.Name, "run_id", job.RunID)
	if since := job.Since(); !since.IsZero() && now.Sub(since) > h.cfg.ReplayWindow {
		h.decide(w, log, http.StatusOK, Stale, fmt.Sprintf("the job's news is %s old, beyond the replay window", now.Sub(since).Round(time.Second)))
		return
	}
	switch job.Action {
	case "queued", "in_progress":
	default:
		// completed: the engine goes idle as usual when its connections
		// end; waiting: a job held for an approval may wait for hours.
		h.decide(w, log, http.StatusOK, IgnoredAction, "nothing to wake for "+job.Action)
		return
	}
	if err := h.cfg.Allow(job); err != nil {
		h.decide(w, log, http.StatusOK, NotAllowed, err.Error())
		return
	}
	key := job.Key()
	eng, woke, err := h.cfg.Prewaker.Prewake(key)
	log = log.With("key", key, "engine", eng)
	switch {
	case err != nil:
		h.decide(w, log, http.StatusServiceUnavailable, Failed, err.Error())
	case woke:
		h.decide(w, log, http.StatusAccepted, Woken, "waking the engine")
	case eng == "":
		h.decide(w, log, http.StatusAccepted, Coalesced, "every engine is busy and running")
	default:
		h.decide(w, log, http.StatusAccepted, Coalesced, "the engine is waking or running already")
	}
}

// readBody reads the body up to MaxBody, answering 413 beyond it.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	max := h.cfg.MaxBody
	tooLarge := func() ([]byte, bool) {
		// The rest is not read: close rather than drain it.
		w.Header().Set("Connection", "close")
		h.unauthenticated(w, http.StatusRequestEntityTooLarge, TooLarge, r.RemoteAddr, fmt.Sprintf("body larger than %d bytes", max))
		return nil, false
	}
	if r.ContentLength > max {
		return tooLarge()
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		h.unauthenticated(w, http.StatusBadRequest, BadRequest, r.RemoteAddr, "read body: "+err.Error())
		return nil, false
	}
	if int64(len(body)) > max {
		return tooLarge()
	}
	return body, true
}

// signed checks X-Hub-Signature-256: "sha256=" and the hex HMAC-SHA256 of
// body under the secret, compared in constant time.
func (h *Handler) signed(body []byte, header string) bool {
	hexSum, ok := strings.CutPrefix(header, "sha256=")
	if !ok || len(hexSum) != 2*sha256.Size {
		return false
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return false
	}
	return hmac.Equal(got, Sign(h.cfg.Secret, body))
}

// Sign is the HMAC-SHA256 GitHub sends, hex-encoded after "sha256=" in
// X-Hub-Signature-256.
func Sign(secret, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return m.Sum(nil)
}

// SignatureHeader is X-Hub-Signature-256's value for body.
func SignatureHeader(secret, body []byte) string {
	return "sha256=" + hex.EncodeToString(Sign(secret, body))
}

// decide answers an authenticated delivery, logs and counts the decision.
func (h *Handler) decide(w http.ResponseWriter, log *slog.Logger, status int, res Result, reason string) {
	h.cfg.Count(res)
	level := slog.LevelInfo
	if res == Failed || res == BadRequest {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "github webhook", "result", string(res), "reason", reason)
	reply(w, status, res, reason)
}

// unauthenticated answers a request that proved nothing: counted always,
// logged at a bounded rate (anyone on the internet can send them).
func (h *Handler) unauthenticated(w http.ResponseWriter, status int, res Result, remote, reason string) {
	h.cfg.Count(res)
	h.noise.note(res, "github webhook refused", "result", string(res), "reason", reason, "remote", remote)
	reply(w, status, res, reason)
}

func reply(w http.ResponseWriter, status int, res Result, reason string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%s: %s\n", res, reason)
}

// quietLog logs a kind of line at most once per period, saying how many it
// left out since.
type quietLog struct {
	log   *slog.Logger
	now   func() time.Time
	every time.Duration

	mu      sync.Mutex // guards last and skipped
	last    map[Result]time.Time
	skipped map[Result]int
}

func (q *quietLog) note(kind Result, msg string, attrs ...any) {
	q.mu.Lock()
	now := q.now()
	if q.last == nil {
		q.last, q.skipped = map[Result]time.Time{}, map[Result]int{}
	}
	if t, ok := q.last[kind]; ok && now.Sub(t) < q.every {
		q.skipped[kind]++
		q.mu.Unlock()
		return
	}
	skipped := q.skipped[kind]
	q.last[kind], q.skipped[kind] = now, 0
	q.mu.Unlock()
	if skipped > 0 {
		attrs = append(attrs, "similar_not_logged", skipped)
	}
	q.log.Warn(msg, attrs...)
}
