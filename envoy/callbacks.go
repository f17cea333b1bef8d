package envoy

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xds "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// callbacks watch every ADS stream: they refuse nodes other than the
// configured one, log what Envoy applies and rejects, and roll back a
// rejected snapshot.
func (s *Server) callbacks() xds.Callbacks {
	return xds.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			s.log.Debug("xds: stream opened", "stream", id)
			return nil
		},
		StreamClosedFunc: func(id int64, node *core.Node) {
			s.mu.Lock()
			delete(s.sent, id)
			s.mu.Unlock()
			s.log.Debug("xds: stream closed", "stream", id, "node", node.GetId())
		},
		StreamRequestFunc:  s.onRequest,
		StreamResponseFunc: s.onResponse,
		DeltaStreamOpenFunc: func(context.Context, int64, string) error {
			return status.Error(codes.Unimplemented, "wakegate's xDS server speaks state-of-the-world ADS (ads_config api_type GRPC, as 'wakegate envoy bootstrap --xds' writes), not delta")
		},
	}
}

// onRequest runs before the server handles a request. The node id is
// self-asserted; it is checked to keep a second Envoy from taking this
// one's configuration by mistake, not as authentication: the socket's
// permissions are that.
func (s *Server) onRequest(id int64, req *discovery.DiscoveryRequest) error {
	if node := req.GetNode().GetId(); node != s.cfg.Envoy.NodeID {
		s.log.Warn("xds: refused a stream from another node", "stream", id, "node", node, "serves", s.cfg.Envoy.NodeID)
		return status.Errorf(codes.PermissionDenied, "node %q is not served here: this xDS server serves node %q (node.id in the bootstrap; see --node)", node, s.cfg.Envoy.NodeID)
	}
	switch {
	case req.GetErrorDetail() != nil:
		s.rejected(id, req)
	case req.GetResponseNonce() != "":
		s.log.Info("xds: envoy applied", "stream", id, "type", shortType(req.GetTypeUrl()), "version", req.GetVersionInfo())
	}
	return nil
}

func (s *Server) onResponse(_ context.Context, id int64, req *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sent[id] == nil {
		s.sent[id] = map[string]sentResp{}
	}
	s.sent[id][resp.GetTypeUrl()] = sentResp{nonce: resp.GetNonce(), version: resp.GetVersionInfo()}
}

// rejected handles a NACK. Envoy keeps running what it last applied
// (req.VersionInfo). The snapshot cache would answer the NACK with the
// rejected version again, and Envoy would reject it again, without end:
// so when the rejected version is the one served, the snapshot Envoy last
// applied is served again (nothing, if it never applied one), until the
// next renewal publishes a new version.
func (s *Server) rejected(id int64, req *discovery.DiscoveryRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := s.sent[id][req.GetTypeUrl()]
	rejected := ""
	if last.nonce == req.GetResponseNonce() {
		rejected = last.version
	}
	kept := req.GetVersionInfo()
	s.log.Error("xds: envoy rejected the configuration and keeps its previous one",
		"stream", id, "type", shortType(req.GetTypeUrl()), "rejected_version", rejected, "kept_version", kept,
		"envoy_error", req.GetErrorDetail().GetMessage())
	if rejected == "" || rejected != s.current || kept == s.current {
		return // a stale response's NACK, or one already rolled back
	}
	prev, ok := s.snaps[kept]
	if !ok {
		// Envoy never applied a snapshot of this server's (kept is
		// ""): serve none, at the version Envoy holds, so that it is
		// not answered and keeps what it has.
		var err error
		empty := map[resource.Type][]types.Resource{resource.ListenerType: {}, resource.ClusterType: {}, resource.SecretType: {}}
		if prev, err = cache.NewSnapshot(kept, empty); err != nil {
			s.log.Error("xds: roll back", "err", err)
			return
		}
	}
	if err := s.setLocked(prev); err != nil {
		s.log.Error("xds: roll back", "version", kept, "err", err)
		return
	}
	s.current = kept
	s.log.Warn("xds: serving the previous snapshot again", "version", kept)
}

// shortType is a type URL's last word: listener, cluster, secret.
func shortType(url string) string {
	name := url[strings.LastIndexByte(url, '.')+1:]
	return strings.ToLower(name)
}

// cacheLogger passes the snapshot cache's own lines to log, at debug but
// for its warnings and errors.
func cacheLogger(log *slog.Logger) gcplog.Logger {
	at := func(level slog.Level) func(string, ...any) {
		return func(format string, args ...any) {
			log.Log(context.Background(), level, "xds cache: "+fmt.Sprintf(format, args...))
		}
	}
	return gcplog.LoggerFuncs{
		DebugFunc: at(slog.LevelDebug),
		InfoFunc:  at(slog.LevelDebug),
		WarnFunc:  at(slog.LevelWarn),
		ErrorFunc: at(slog.LevelError),
	}
}
