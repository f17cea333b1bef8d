package main

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/wakegate/wakegate/gateway"
	"github.com/wakegate/wakegate/policy"
	"github.com/wakegate/wakegate/webhook"
)

// webhookFlags configure GitHub's workflow_job webhook: a queued job's
// engine is woken before the job connects.
type webhookFlags struct {
	secretFile string
	grace      time.Duration
	secret     []byte // read from secretFile by validate; nil: the webhook is off
}

func (w *webhookFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&w.secretFile, "github-webhook-secret-file", "", "file (mode 0600) holding the secret of a GitHub workflow_job webhook, served at POST "+webhook.Path+
		" on --ca-listen: a queued job's engine is woken before the job connects (docs/github-actions.md); needs --policy. Unset: off")
	fs.DurationVar(&w.grace, "prewake-grace", gateway.DefaultPrewakeGrace, "a pre-woken engine no connection comes to within this is stopped again")
}

// validate reads the secret, before any socket opens: the policy says which
// repositories may be pre-woken, so the webhook needs one.
func (w *webhookFlags) validate(policyFile string) error {
	if w.grace <= 0 {
		return usageError("gateway", "--prewake-grace must be positive")
	}
	if w.secretFile == "" {
		return nil
	}
	if policyFile == "" {
		return usageError("gateway", "--github-webhook-secret-file needs --policy: the policy says which repositories' engines may be pre-woken")
	}
	secret, err := readSecretFile(w.secretFile)
	if err != nil {
		return fmt.Errorf("--github-webhook-secret-file: %w", err)
	}
	w.secret = secret
	return nil
}

// readSecretFile reads a secret that only its owner may read (what GitHub
// signs deliveries with: anyone who reads it can wake engines). A trailing
// newline is not part of it.
func readSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %04o): chmod 600 %s", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return b, nil
}

// mount serves the webhook on the CA API's public listener (where GitHub
// reaches the gateway), pre-waking engines of pool for the repositories the
// policy could let in. Off without a secret.
func (w *webhookFlags) mount(caSvc *caService, pool *gateway.Pool, pol *gatewayPolicy, log *slog.Logger) error {
	if w.secret == nil {
		return nil
	}
	h, err := newWebhook(w.secret, pool, w.grace, pol.current, log)
	if err != nil {
		return err
	}
	if err := caSvc.srv.Mount(webhook.Path, h); err != nil {
		return err
	}
	log.Info("github webhook listening", "url", caSvc.url+webhook.Path, "prewake_grace", w.grace.String())
	return nil
}

// newWebhook is the webhook's handler: deliveries judged by the policy in
// force (current), counted in the pool's metrics, pre-waking its engines.
func newWebhook(secret []byte, pool *gateway.Pool, grace time.Duration, current func() *policy.Policy, log *slog.Logger) (*webhook.Handler, error) {
	return webhook.New(webhook.Config{
		Secret:   secret,
		Prewaker: poolPrewaker{pool: pool, grace: grace},
		Allow: func(j webhook.Job) error {
			return current().AllowQueued(policy.QueuedJob{Repository: j.Repository, Owner: j.Owner, Workflow: j.Workflow})
		},
		Count: func(r webhook.Result) { pool.CountDelivery(string(r)) },
		Log:   log,
	})
}

// poolPrewaker pre-wakes the pool's engines with the gateway's grace.
type poolPrewaker struct {
	pool  *gateway.Pool
	grace time.Duration
}

func (p poolPrewaker) Prewake(key string) (string, bool, error) { return p.pool.Prewake(key, p.grace) }
