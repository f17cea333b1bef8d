package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// revokedPath serves the serial numbers of revoked certificates that have
// not expired. Like a CRL it is public: it names serials, nothing secret.
const revokedPath = "/wakegate/v1/revoked"

func (a *Authority) serveRevoked(w http.ResponseWriter, r *http.Request) {
	serials, err := a.RevokedSerials()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		Serials []string `json:"serials"`
	}{serials})
}

// RevocationPoller keeps a copy of the CA's revoked serials, refreshed
// every interval, for parties that do not hold the CA's database (engines).
// Before its first successful refresh it refuses everyone; afterwards a CA
// that cannot be reached leaves the last list in force, with a warning.
type RevocationPoller struct {
	url      string
	client   *http.Client
	interval time.Duration
	log      *slog.Logger

	mu      sync.RWMutex // guards revoked and fetched
	revoked map[string]bool
	fetched time.Time
}

// NewRevocationPoller polls caURL, trusting roots.
func NewRevocationPoller(caURL string, roots *x509.CertPool, interval time.Duration, log *slog.Logger) *RevocationPoller {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RevocationPoller{
		url:      caURL + revokedPath,
		interval: interval,
		log:      log,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		}},
	}
}

// Refresh fetches the list once.
func (p *RevocationPoller) Refresh(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch revoked certificates: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch revoked certificates: %s", resp.Status)
	}
	var body struct {
		Serials []string `json:"serials"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&body); err != nil {
		return fmt.Errorf("fetch revoked certificates: %w", err)
	}
	set := make(map[string]bool, len(body.Serials))
	for _, s := range body.Serials {
		set[s] = true
	}
	p.mu.Lock()
	p.revoked, p.fetched = set, time.Now()
	p.mu.Unlock()
	return nil
}

// Run refreshes every interval until ctx ends.
func (p *RevocationPoller) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		if err := p.Refresh(ctx); err != nil && ctx.Err() == nil {
			p.mu.RLock()
			age := time.Since(p.fetched)
			p.mu.RUnlock()
			p.log.Warn("revocation list not refreshed; using the last one", "err", err, "age", age.Round(time.Second).String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// IsRevoked answers from the last list; with none yet, it refuses.
func (p *RevocationPoller) IsRevoked(serial string) (bool, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.revoked == nil {
		return false, errors.New("no revocation list from the CA yet")
	}
	return p.revoked[serial], nil
}
