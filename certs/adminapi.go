package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
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
// for it (killHeader), closes the certificate's open connections.
func (a *Authority) serveRevoke(w http.ResponseWriter, r *http.Request, next http.Handler) {
	body, ok := readBody(w, r, maxSignBody)
	if !ok {
		return
	}
	var req api.RevokeRequest
	json.Unmarshal(body, &req)
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	next.ServeHTTP(rec, r)
	if rec.status != http.StatusOK {
		return
	}
	a.revokedNow(req.Serial)
	if kill := a.onKill.Load(); r.Header.Get(killHeader) != "" && kill != nil {
		(*kill)(req.Serial)
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// OnKill sets what closes a revoked certificate's connections when an
// operator asks for it.
func (a *Authority) OnKill(f func(serial string)) { a.onKill.Store(&f) }

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
		return fmt.Errorf("the gateway's CA answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (r *remoteAdmin) revoke(ctx context.Context, serial, reason string, kill bool) error {
	tok, err := r.ca.Clients.Token(serial, nil, time.Minute)
	if err != nil {
		return err
	}
	h := map[string]string{}
	if kill {
		h[killHeader] = "1"
	}
	return r.do(ctx, http.MethodPost, "/1.0/revoke", api.RevokeRequest{Serial: serial, OTT: tok, Reason: reason, Passive: true}, h, nil)
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
