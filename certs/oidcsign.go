package certs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/smallstep/certificates/api"
	"github.com/smallstep/certificates/errs"
	"github.com/wakegate/wakegate/identity"
)

// maxSignBody bounds a /sign request: a CSR and a token are a few KiB.
const maxSignBody = 256 << 10

// oidcSubjectPrefix begins the common name of an OIDC-enrolled client:
// github:OWNER/NAME.
const oidcSubjectPrefix = "github:"

// EnableOIDC turns on OIDC enrolment at the API's /sign. Unless
// cfg.Enabled refuses at once, the issuer's keys are fetched in the
// background (retried while it is down) until Close.
func (a *Authority) EnableOIDC(cfg OIDCConfig) error {
	v, err := newOIDCVerifier(cfg)
	if err != nil {
		return err
	}
	if !a.oidc.CompareAndSwap(nil, v) {
		return fmt.Errorf("OIDC enrolment is already enabled")
	}
	if v.cfg.Enabled() != nil {
		return nil // off: nothing to fetch (and no traffic to the issuer)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stopBackground = append(a.stopBackground, cancel)
	a.background.Add(1)
	go func() {
		defer a.background.Done()
		v.keys.run(ctx)
	}()
	return nil
}

// serveSign routes a /sign request: an OIDC token (its issuer is a URL) is
// verified, judged by the policy and exchanged here; anything else is
// smallstep's.
func (a *Authority) serveSign(w http.ResponseWriter, r *http.Request, next http.Handler) {
	body, ok := readBody(w, r, maxSignBody)
	if !ok {
		return
	}
	var req api.SignRequest
	if json.Unmarshal(body, &req) != nil || !looksLikeOIDC(unverifiedIssuer(req.OTT)) {
		next.ServeHTTP(w, r)
		return
	}
	v := a.oidc.Load()
	if v == nil {
		writeAPIError(w, http.StatusForbidden, "OIDC enrolment is not enabled on this CA")
		return
	}
	a.exchangeOIDC(w, r, v, &req, next)
}

// exchangeOIDC signs a client certificate for a verified, allowed job. The
// job's token is spent (each signs once), then smallstep signs the request
// under a one-time token of the clients provisioner whose subject and SANs
// come from the verified claims, so the certificate has the same profile,
// lifetime bounds and database record as any other client's.
func (a *Authority) exchangeOIDC(w http.ResponseWriter, r *http.Request, v *oidcVerifier, req *api.SignRequest, next http.Handler) {
	log := v.cfg.Log.With("remote", r.RemoteAddr)
	claims, ref := v.verify(r.Context(), req.OTT, time.Now())
	if ref != nil {
		log.Warn("OIDC enrolment refused", "reason", ref.msg, "err", ref.err)
		writeAPIError(w, ref.status, ref.msg)
		return
	}
	log = log.With(claimAttrs(claims)...)
	if err := v.cfg.Allow(claims); err != nil {
		log.Warn("OIDC enrolment refused by policy", "reason", err.Error())
		writeAPIError(w, http.StatusForbidden, err.Error())
		return
	}
	if req.CsrPEM.CertificateRequest == nil {
		writeAPIError(w, http.StatusBadRequest, "missing csr")
		return
	}
	sum := sha256.Sum256([]byte(req.OTT))
	fresh, err := a.auth.GetDatabase().UseToken("wakegate-oidc:"+hex.EncodeToString(sum[:]), req.OTT)
	if err != nil {
		log.Error("OIDC enrolment: record token use", "err", err)
		writeAPIError(w, http.StatusInternalServerError, "record the token's use")
		return
	}
	if !fresh {
		log.Warn("OIDC enrolment refused", "reason", "token already used")
		writeAPIError(w, http.StatusUnauthorized, "this OIDC token was already exchanged: request a fresh one for each enrolment")
		return
	}
	subject := oidcSubjectPrefix + claims.Repository
	ott, err := a.ca.Clients.Token(subject, []string{identity.RepoURI(claims.Repository), claims.URI()}, time.Minute)
	if err != nil {
		log.Error("OIDC enrolment: internal token", "err", err)
		writeAPIError(w, http.StatusInternalServerError, "authorize the request")
		return
	}
	inner, err := json.Marshal(api.SignRequest{CsrPEM: req.CsrPEM, OTT: ott, NotBefore: req.NotBefore, NotAfter: req.NotAfter})
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, "encode the request")
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(inner))
	r.ContentLength = int64(len(inner))
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	next.ServeHTTP(rec, r)
	if rec.status >= 300 {
		log.Warn("OIDC enrolment: signing failed", "status", rec.status)
		return
	}
	log.Info("OIDC enrolment", "identity", subject)
}

// writeAPIError answers as smallstep's API does, so its client reports
// msg as the error.
func writeAPIError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(errs.ErrorResponse{Status: status, Message: msg})
}
