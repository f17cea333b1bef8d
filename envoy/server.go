package envoy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xds "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Credentials are the certificate the Envoy presents, kept fresh by their
// owner (certs.Renewer satisfies it).
type Credentials interface {
	// Current is the certificate to present now, chain and key.
	Current() *tls.Certificate
	// Changed is closed when Current changes.
	Changed() <-chan struct{}
}

// ServerConfig configures an ADS server for one Envoy.
type ServerConfig struct {
	// Envoy is what the Envoy is to do (NewServer validates it).
	Envoy Config
	// Creds is the certificate to serve as the CertSecret.
	Creds Credentials
	// Roots are the CA roots served as the TrustSecret.
	Roots []*x509.Certificate
	// Log receives one line per published snapshot, per configuration
	// Envoy applies or rejects, and per refused stream. Never a key.
	Log *slog.Logger
	// StopGrace bounds how long Run waits for streams to end when it
	// stops (5 s if zero).
	StopGrace time.Duration
}

// keptSnapshots is how many published snapshots are kept to roll back to
// when Envoy rejects one.
const keptSnapshots = 8

// Server is an ADS server (go-control-plane's snapshot cache and
// state-of-the-world server) for one Envoy node: the listener, the
// clusters and the two secrets of a Config, as one snapshot whose version
// goes up each time the certificate is renewed, so that Envoy swaps
// certificates with no restart and no dropped connection.
//
// It serves a private key: listen where only this machine's user can
// reach it (a unix socket of mode 0600, or loopback).
type Server struct {
	cfg      ServerConfig
	log      *slog.Logger
	cache    cache.SnapshotCache
	listener *listener.Listener
	clusters []*cluster.Cluster

	mu       sync.Mutex // guards everything below
	n        int        // snapshots published; the next version is n+1
	current  string     // the version served now
	snaps    map[string]*cache.Snapshot
	order    []string                      // versions in snaps, oldest first
	sent     map[int64]map[string]sentResp // stream → type URL → last response
	lastCert *tls.Certificate
}

// sentResp is the last response a stream was sent for a type: a NACK names
// its nonce.
type sentResp struct{ nonce, version string }

// NewServer builds the resources of cfg.Envoy and publishes the first
// snapshot, so that a configuration or certificate Envoy could not use
// fails here rather than in Envoy.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Creds == nil {
		return nil, errors.New("envoy xds: no credentials")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 5 * time.Second
	}
	if err := cfg.Envoy.Validate(); err != nil {
		return nil, fmt.Errorf("envoy xds: %w", err)
	}
	var err error
	s := &Server{
		cfg:   cfg,
		log:   cfg.Log,
		snaps: map[string]*cache.Snapshot{},
		sent:  map[int64]map[string]sentResp{},
	}
	s.cache = cache.NewSnapshotCache(true, cache.IDHash{}, cacheLogger(cfg.Log))
	if s.listener, err = cfg.Envoy.Listener(Secrets{}); err != nil {
		return nil, err
	}
	if s.clusters, err = cfg.Envoy.Clusters(Secrets{}); err != nil {
		return nil, err
	}
	if err := s.publish(cfg.Creds.Current()); err != nil {
		return nil, err
	}
	return s, nil
}

// Version is the snapshot version served now.
func (s *Server) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// Run serves ADS on ln and follows the credentials, publishing a new
// snapshot at each renewal, until ctx ends or ln fails. Then it ends every
// stream, stops within StopGrace, and returns once every goroutine it
// started has.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// ADS streams never end on their own: this context ends them.
	streams, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	g := grpc.NewServer(
		grpc.MaxConcurrentStreams(16),
		// Envoy pings on its xDS connection when told to; allow it.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	discovery.RegisterAggregatedDiscoveryServiceServer(g, xds.NewServer(streams, s.cache, s.callbacks()))

	served := make(chan error, 1)
	go func() { served <- g.Serve(ln) }()
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		s.follow(ctx)
	}()

	var err error
	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("envoy xds: serve %s: %w", ln.Addr(), err)
	}
	cancel()
	endStreams()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		g.GracefulStop()
	}()
	t := time.NewTimer(s.cfg.StopGrace)
	select {
	case <-stopped:
		t.Stop()
	case <-t.C:
		s.log.Warn("xds: streams did not end in time; closing them", "grace", s.cfg.StopGrace.String())
		g.Stop()
		<-stopped
	}
	<-followed
	return err
}

// follow publishes a snapshot each time the credentials change.
func (s *Server) follow(ctx context.Context) {
	for {
		changed := s.cfg.Creds.Changed() // before Current: a change in between is not missed
		cert := s.cfg.Creds.Current()
		s.mu.Lock()
		same := cert == s.lastCert
		s.mu.Unlock()
		if !same {
			if err := s.publish(cert); err != nil {
				s.log.Error("xds: the renewed certificate cannot be served; Envoy keeps the previous one", "version", s.Version(), "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// publish serves cert in a new snapshot: every resource validated, the
// snapshot checked for consistency, then set for the node.
func (s *Server) publish(cert *tls.Certificate) error {
	sec, err := SecretResources(cert, s.cfg.Roots)
	if err != nil {
		return err
	}
	res := map[resource.Type][]types.Resource{
		resource.ListenerType: {s.listener},
		resource.SecretType:   {sec[0], sec[1]},
	}
	for _, c := range s.clusters {
		res[resource.ClusterType] = append(res[resource.ClusterType], c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	version := strconv.Itoa(s.n + 1)
	snap, err := cache.NewSnapshot(version, res)
	if err != nil {
		return fmt.Errorf("envoy xds: snapshot %s: %w", version, err)
	}
	if err := snap.Consistent(); err != nil {
		return fmt.Errorf("envoy xds: snapshot %s: %w", version, err)
	}
	if err := checkSecrets(s.listener, s.clusters, sec); err != nil {
		return fmt.Errorf("envoy xds: snapshot %s: %w", version, err)
	}
	if err := s.setLocked(snap); err != nil {
		return err
	}
	s.n++
	s.current = version
	s.lastCert = cert
	s.snaps[version] = snap
	s.order = append(s.order, version)
	s.trimLocked()
	attrs := []any{"node", s.cfg.Envoy.NodeID, "version", version}
	if leaf := cert.Leaf; leaf != nil {
		attrs = append(attrs, "identity", leaf.Subject.CommonName, "serial", leaf.SerialNumber.String(),
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	s.log.Info("xds: snapshot published", attrs...)
	return nil
}

// setLocked sets snap for the node. The cache answers open watches on
// buffered channels; the deadline only bounds a stream that stopped
// reading.
func (s *Server) setLocked(snap cache.ResourceSnapshot) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.cache.SetSnapshot(ctx, s.cfg.Envoy.NodeID, snap); err != nil {
		return fmt.Errorf("envoy xds: set snapshot: %w", err)
	}
	return nil
}

// trimLocked forgets the oldest snapshots beyond keptSnapshots, but never
// the one served (after a rollback, an old one may be).
func (s *Server) trimLocked() {
	for i := 0; len(s.order) > keptSnapshots && i < len(s.order); {
		if v := s.order[i]; v != s.current {
			delete(s.snaps, v)
			s.order = append(s.order[:i], s.order[i+1:]...)
			continue
		}
		i++
	}
}
