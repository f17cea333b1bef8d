package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/smallstep/certificates/api"
	"go.step.sm/crypto/jose"
)

// Beyond smallstep's API, a gateway serving the CA answers two operator
// requests (only holders of the CA directory and its password have the
// keys that authorize them):
//   - GET /wakegate/v1/certs with a bearer token of the operator key
//     (CA.Admin, which signs nothing else) for subject listSubject,
//     single-use: the certificates of the database;
//   - POST /1.0/revoke (smallstep's, token-authorized) with the header
//     killHeader: after revoking, close that certificate's open connections.
const (
	listPath    = "/wakegate/v1/certs"
	listSubject = "wakegate:list-certificates"
	killHeader  = "Wakegate-Kill-Connections"
)

// adminRoutes wraps smallstep's API with wakegate's operator requests.
func (a *Authority) adminRoutes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodPost || r.URL.Path == listPath) && a.dbDown(r.Context()) {
			writeAPIError(w, http.StatusServiceUnavailable, "the CA's database does not answer: certificates cannot be issued, renewed or revoked until it does; try again in a minute (the gateway's log says more)")
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == listPath:
			a.serveList(w, r)
		case r.Method == http.MethodGet && r.URL.Path == revokedPath:
			a.serveRevoked(w, r)
		case r.Method == http.MethodPost && (r.URL.Path == "/sign" || r.URL.Path == "/1.0/sign"):
			a.serveSign(w, r, next)
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/revoke"):
			a.serveRevoke(w, r, next)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func (a *Authority) serveList(w http.ResponseWriter, r *http.Request) {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if err := a.verifyOperator(tok, listSubject); err != nil {
		writeAPIError(w, http.StatusUnauthorized, "unauthorized: "+err.Error())
		return
	}
	recs, err := a.Records()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(recs)
}

// serveRevoke lets smallstep's handler revoke (it authorizes the token),
// then puts the serial in the revocation index and, when the operator asked
// for it (killHeader), closes the certificate's open connections and says
// how many in the response (revokeResponse). A revocation authorized by one
// of the CA's provisioner keys for a serial the database does not hold is
// refused with 404: smallstep would record it and revoke nothing.
func (a *Authority) serveRevoke(w http.ResponseWriter, r *http.Request, next http.Handler) {
	body, ok := readBody(w, r, maxSignBody)
	if !ok {
		return
	}
	var req api.RevokeRequest
	json.Unmarshal(body, &req)
	// smallstep's handler reads the serial in base 0 (decimal, or hex with
	// 0x) and keys its database by the decimal form: so must the index
	// and the kill.
	serial := req.Serial
	if n, ok := new(big.Int).SetString(req.Serial, 0); ok {
		serial = n.String()
	}
	// Whether a serial exists is said only to holders of a provisioner key.
	var cert *x509.Certificate
	if req.OTT != "" && a.provisionerToken(req.OTT, serial) {
		c, err := a.certificate(serial)
		switch {
		case errors.Is(err, ErrUnknownSerial):
			writeAPIError(w, http.StatusNotFound, err.Error())
			return
		case err != nil:
			writeAPIError(w, http.StatusInternalServerError, err.Error())
			return
		}
		cert = c
	}
	rec := &bufferedResponse{header: w.Header(), status: http.StatusOK}
	next.ServeHTTP(rec, r)
	if rec.status != http.StatusOK {
		w.WriteHeader(rec.status)
		w.Write(rec.body.Bytes())
		return
	}
	a.revokedNow(serial)
	var resp revokeResponse
	json.Unmarshal(rec.body.Bytes(), &resp.RevokeResponse)
	if cert == nil {
		cert, _ = a.certificate(serial)
	}
	if cert != nil {
		resp.Identity = cert.Subject.CommonName
	}
	resp.Shared = a.Shared()
	if r.Header.Get(killHeader) != "" {
		n := 0
		if kill := a.onKill.Load(); kill != nil {
			n = (*kill)(serial)
		}
		resp.Closed = &n
		if err := a.recordKill(serial); err != nil {
			a.log.Error("revoked with --kill, but the other gateways were not told", "serial", serial, "err", err)
		}
	}
	w.Header().Del("Content-Length")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	json.NewEncoder(w).Encode(resp)
}

// revokeResponse is smallstep's answer to /revoke with what wakegate adds.
type revokeResponse struct {
	api.RevokeResponse
	Identity string `json:"identity,omitempty"` // the certificate's common name
	// Closed counts the connections closed when killHeader asked for it.
	Closed *int `json:"closed_connections,omitempty"`
	// Shared says that other gateways share the CA's database: they
	// refuse the certificate too, and close its connections if asked.
	Shared bool `json:"shared_database,omitempty"`
}

// provisionerToken reports whether token is signed by one of the CA's
// provisioner keys for subject (without spending it: smallstep does).
func (a *Authority) provisionerToken(token, subject string) bool {
	for _, p := range []*Provisioner{a.ca.Clients, a.ca.Servers} {
		if _, err := p.verify(token, subject); err == nil {
			return true
		}
	}
	return false
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// bufferedResponse holds a handler's response so that it can be added to
// before it is sent.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) WriteHeader(code int)        { b.status = code }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }

// OnKill sets what closes a revoked certificate's connections when an
// operator asks for it; it returns how many it closed.
func (a *Authority) OnKill(f func(serial string) int) { a.onKill.Store(&f) }

// verifyOperator checks a bearer token of the operator key for subject,
// and spends it: a captured request cannot be replayed.
func (a *Authority) verifyOperator(token, subject string) error {
	claims, err := a.ca.Admin.verify(token, subject)
	if err != nil {
		return err
	}
	if claims.ID == "" {
		return fmt.Errorf("token has no id")
	}
	fresh, err := a.auth.GetDatabase().UseToken("wakegate-operator:"+claims.ID, token)
	if err != nil {
		return fmt.Errorf("record the token's use: %w", err)
	}
	if !fresh {
		return fmt.Errorf("token already used")
	}
	return nil
}

// verify checks a bearer token signed by the provisioner for subject.
func (p *Provisioner) verify(token, subject string) (*jose.Claims, error) {
	tok, err := jose.ParseSigned(token)
	if err != nil {
		return nil, fmt.Errorf("bad token: %w", err)
	}
	var claims jose.Claims
	if err := tok.Claims(p.Public(), &claims); err != nil {
		return nil, fmt.Errorf("token not signed by the %s key", p.Name)
	}
	if err := claims.ValidateWithLeeway(jose.Expected{Subject: subject, Issuer: p.Name, Time: time.Now()}, time.Minute); err != nil {
		return nil, err
	}
	return &claims, nil
}

// remoteAdmin speaks wakegate's operator requests to a running gateway.
type remoteAdmin struct {
	url    string
	ca     *CA
	client *http.Client
}

func newRemoteAdmin(url string, ca *CA) *remoteAdmin {
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root)
	return &remoteAdmin{url: url, ca: ca, client: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}}
}

// apiError is a response other than 200 from the gateway's CA.
type apiError struct {
	status string // as "404 Not Found"
	code   int
	body   string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("the gateway's CA answered %s: %s", e.status, e.body)
}

func (r *remoteAdmin) do(ctx context.Context, method, path string, body any, header map[string]string, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.url+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("reach the gateway's CA at %s: %w", r.url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		return &apiError{status: resp.Status, code: resp.StatusCode, body: strings.TrimSpace(string(data))}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (r *remoteAdmin) revoke(ctx context.Context, serial, reason string, kill bool) error {
	_, err := r.revocation(ctx, serial, reason, kill)
	return err
}

// revocation revokes serial (decimal) through the gateway's API and says
// what that did.
func (r *remoteAdmin) revocation(ctx context.Context, serial, reason string, kill bool) (*Revocation, error) {
	tok, err := r.ca.Clients.Token(serial, nil, time.Minute)
	if err != nil {
		return nil, err
	}
	h := map[string]string{}
	if kill {
		h[killHeader] = "1"
	}
	var resp revokeResponse
	err = r.do(ctx, http.MethodPost, "/1.0/revoke", api.RevokeRequest{Serial: serial, OTT: tok, Reason: reason, Passive: true}, h, &resp)
	if ae := (*apiError)(nil); errors.As(err, &ae) && ae.code == http.StatusNotFound {
		return nil, unknownSerial(serial)
	}
	if err != nil {
		return nil, fmt.Errorf("revoke %s: %w", serial, err)
	}
	rv := &Revocation{Serial: serial, Identity: resp.Identity, Gateway: r.url, Shared: resp.Shared}
	switch {
	case resp.Closed != nil:
		rv.Closed = *resp.Closed
	case kill:
		rv.Closed = -1 // a gateway that does not count them
	}
	return rv, nil
}

func (r *remoteAdmin) records(ctx context.Context) ([]Record, error) {
	tok, err := r.ca.Admin.Token(listSubject, nil, time.Minute)
	if err != nil {
		return nil, err
	}
	var recs []Record
	err = r.do(ctx, http.MethodGet, listPath, nil, map[string]string{"Authorization": "Bearer " + tok}, &recs)
	return recs, err
}
