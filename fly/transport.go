package fly

import (
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
	c.CheckRetry = retryablehttp.DefaultRetryPolicy
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
	return &retryablehttp.RoundTripper{Client: c}
}
