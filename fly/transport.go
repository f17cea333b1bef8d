package fly

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// retryingTransport retries what flaps' own HTTP layer does not: 429s
// (honouring Retry-After, as DefaultBackoff does) and 5xx, with exponential
// backoff. Fly limits mutations to about one request per second per action
// per machine, so the first retry waits at least that long. Requests still
// end with their context: a retry never outlives the caller's deadline.
func retryingTransport(base http.RoundTripper, log *slog.Logger) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	c := retryablehttp.NewClient()
	c.HTTPClient = &http.Client{Transport: base}
	c.RetryMax = 5
	c.RetryWaitMin = time.Second
	c.RetryWaitMax = 8 * time.Second
	c.Backoff = retryablehttp.DefaultBackoff
	c.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if ctx.Value(createKey{}) != nil {
			// A create that failed may have been applied (a 5xx, a
			// timeout, a reset after the request went out): retrying it
			// blindly bills a duplicate machine or volume. Only a 429 was
			// surely refused; the caller settles the rest by listing
			// (flyctl internal/flapsutil/retry.go: a failed create is
			// "ambiguous").
			if err == nil && resp != nil && resp.StatusCode == http.StatusTooManyRequests {
				return true, nil
			}
			return false, ctx.Err()
		}
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	// Hand the last response (a 429, a 503) to flaps, so its error says
	// what the API answered rather than "giving up".
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	c.Logger = nil
	c.ResponseLogHook = func(_ retryablehttp.Logger, r *http.Response) { recordAnswer(r) }
	c.RequestLogHook = func(_ retryablehttp.Logger, r *http.Request, attempt int) {
		if attempt > 0 {
			log.Warn("retrying Machines API request", "method", r.Method, "path", r.URL.Path, "attempt", attempt)
		}
	}
	return createGuard{&retryablehttp.RoundTripper{Client: c}}
}

type createKey struct{}

// createGuard keeps fly-go's own HTTP layer from retrying a create: it
// retries 502, 503 and "temporary" errors such as a reset connection on
// every method (fly-go http.go, NewHTTPClient), which for a create that
// was applied bills a duplicate volume. For creates, such an answer is
// handed up as an error it does not retry, saying the outcome is unknown.
type createGuard struct{ next http.RoundTripper }

// ambiguousCreate is a create whose outcome is unknown.
type ambiguousCreate struct{ cause string }

func (e *ambiguousCreate) Error() string {
	return "the create's outcome is unknown (" + e.cause + "): it may have been applied"
}

func (g createGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := g.next.RoundTrip(r)
	if r.Context().Value(createKey{}) == nil {
		return resp, err
	}
	if err != nil {
		return nil, &ambiguousCreate{cause: err.Error()}
	}
	if resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout {
		resp.Body.Close()
		return nil, &ambiguousCreate{cause: "the API answered " + resp.Status}
	}
	return resp, nil
}

// creating marks a call that creates something: it is not retried on
// answers that leave its outcome unknown.
func creating(ctx context.Context) context.Context { return context.WithValue(ctx, createKey{}, true) }

// observing reports each request under the retries to observe: the
// gateway counts API calls and errors by status.
func observing(base http.RoundTripper, observe func(method string, status int)) http.RoundTripper {
	if observe == nil {
		return base
	}
	if base == nil {
		base = http.DefaultTransport
	}
	return observer{base, observe}
}

type observer struct {
	next    http.RoundTripper
	observe func(method string, status int)
}

func (o observer) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := o.next.RoundTrip(r)
	status := 0
	if err == nil {
		status = resp.StatusCode
	}
	o.observe(r.Method, status)
	return resp, err
}
