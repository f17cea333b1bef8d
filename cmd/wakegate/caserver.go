package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// caService is the embedded authority of a gateway: its API served on
// --ca-listen, and the renewers of the certificates it issued to itself.
type caService struct {
	auth *certs.Authority
	url  string // "" when the API is not served
	// internalURL serves the same API on loopback, for local engines: the
	// public listener's connection cap can be filled by anyone on the
	// internet, and a wake must not wait for a slot there.
	internalURL string
	srv         *certs.APIServer
	internal    *certs.APIServer
	announce    func()
	cancel      context.CancelFunc
	certTTL     time.Duration  // lifetime of the server certificates it issues itself
	wg          sync.WaitGroup // API server and renewers
}

// startCA opens the authority on ca and, unless listen is "", serves its
// API there with a server certificate it renews itself.
func startCA(ca *certs.CA, listen, sans string, acfg certs.AuthorityConfig, limits certs.APILimits, certTTL time.Duration, log *slog.Logger) (*caService, error) {
	s := &caService{certTTL: certTTL}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	var ln net.Listener
	addr := "127.0.0.1:0"
	if listen != "" {
		var err error
		if ln, err = net.Listen("tcp", listen); err != nil {
			cancel()
			return nil, fmt.Errorf("CA API: listen on %s: %w", listen, err)
		}
		addr = ln.Addr().String()
	}
	names := serverSANs(addr, sans)
	acfg.Address, acfg.DNSNames = addr, names
	auth, err := ca.OpenAuthority(acfg)
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		cancel()
		if ca.DB != "" {
			return nil, err // it says what to check
		}
		return nil, fmt.Errorf("%w (is another gateway or command using this CA directory?)", err)
	}
	s.auth = auth
	if ca.DB != "" {
		log.Info("CA state in the shared database", "db", certs.RedactDBURL(ca.DB), "revocation_staleness", acfg.RevocationStaleness.String())
	}
	if ln == nil {
		return s, nil
	}
	renewer, err := s.selfRenewing(ctx, "ca-api", names, log)
	if err != nil {
		s.Close()
		ln.Close()
		return nil, err
	}
	s.url = "https://" + addr
	s.srv = auth.NewAPIServer(renewer.Current, limits, log)
	iln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Close()
		ln.Close()
		return nil, fmt.Errorf("CA API for local engines: %w", err)
	}
	s.internalURL = "https://" + iln.Addr().String()
	s.internal = auth.NewAPIServer(renewer.Current, limits, log)
	for _, l := range []struct {
		srv *certs.APIServer
		ln  net.Listener
	}{{s.srv, ln}, {s.internal, iln}} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := l.srv.Serve(l.ln); err != nil {
				log.Error("CA API stopped", "addr", l.ln.Addr().String(), "err", err)
			}
		}()
	}
	if s.announce, err = ca.AnnounceServing(s.url); err != nil {
		s.Close()
		return nil, err
	}
	log.Info("CA API listening", "addr", addr, "fingerprint", ca.Fingerprint())
	return s, nil
}

// selfRenewing issues a server certificate from the authority and keeps it
// renewed at two thirds of its life until the service closes.
func (s *caService) selfRenewing(ctx context.Context, name string, sans []string, log *slog.Logger) (*certs.Renewer, error) {
	leaf, err := s.auth.Issue(ctx, certs.Server, name, sans, s.certTTL)
	if err != nil {
		return nil, fmt.Errorf("%s certificate: %w", name, err)
	}
	r, err := certs.NewRenewer(name, leaf.TLSCertificate(), s.auth.RenewTLS, log)
	if err != nil {
		return nil, err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.Run(ctx)
	}()
	return r, nil
}

// Close stops the API and the renewers, then closes the database.
func (s *caService) Close() {
	if s.announce != nil {
		s.announce()
	}
	for _, srv := range []*certs.APIServer{s.srv, s.internal} {
		if srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			srv.Shutdown(ctx)
			cancel()
		}
	}
	s.cancel()
	s.wg.Wait()
	if s.auth != nil {
		s.auth.Close()
	}
}
