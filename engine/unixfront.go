package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wakegate/wakegate/wire"
)

// The engine's unix front: the same front as its mTLS port — proxied
// streams counted for busy and idle, GET /ready and /status — on a unix
// socket in its state directory, without TLS, for a gateway on this machine
// that runs as the engine's own user (the local provider). Such a gateway
// already starts the engine as its child, with the same rights over its
// state directory and BuildKit's own socket there: TLS on loopback between
// them added an encryption and a decryption of every byte and a handshake
// per connection, and no protection.
//
// Who may connect is the kernel's to say, not a certificate's: the socket
// is 0600, and each peer's uid (SO_PEERCRED) must be the engine's — which
// also covers the moment between bind and chmod. Symmetrically, Client
// checks that the process listening at a unix:// address runs as the
// gateway's user. There is no certificate on this hop, so neither
// admitGateway's role check nor the gateway's revocation check of the
// engine's certificate applies to it; both still guard the mTLS port.
//
// With no TLS there is no ALPN: the client opens each connection with the
// protocol it wants, one length byte and the name (wire.ProtoProxy or
// ProtoStatus), and the engine reads exactly that before anything else.

// FrontSocketName is the unix front's file in the engine's state
// directory. It is shorter than the engine process's own socket
// (buildkitd.sock, Dagger's engine.sock and metrics.sock), so a state
// directory whose engine socket fits the 107-byte limit fits it too.
const FrontSocketName = "front.sock"

// FrontSocket is the unix front's path for state directory dir.
func FrontSocket(dir string) string { return filepath.Join(dir, FrontSocketName) }

// UnixScheme prefixes an engine address reached over its unix front:
// "unix:///path/to/state/front.sock".
const UnixScheme = "unix://"

// protoTimeout bounds how long a unix peer may take to say its protocol,
// as the TLS handshake is bounded on the mTLS port.
const protoTimeout = 10 * time.Second

// CheckSocketPath says whether path fits in a unix socket address.
func CheckSocketPath(path string) error {
	if len(path) > maxSocketPath {
		return fmt.Errorf("unix socket path %s is %d bytes, longer than the %d a socket address holds: use a shorter state directory", path, len(path), maxSocketPath)
	}
	return nil
}

// ListenUnix opens the unix front at path, mode 0600. A socket file left
// by an engine that was killed is removed; one that still answers is
// another engine's, and refused.
func ListenUnix(path string) (net.Listener, error) {
	if err := CheckSocketPath(path); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("engine: %s already answers: another engine serves this state directory", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("engine: remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("engine: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("engine: %s: %w", path, err)
	}
	return ln, nil
}

// sameUser refuses a unix peer that runs as another user than this process.
func sameUser(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("not a unix socket: %T", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return fmt.Errorf("peer credentials: %w", credErr)
	}
	if me := uint32(os.Geteuid()); cred.Uid != me {
		return fmt.Errorf("peer pid %d runs as uid %d, not this process's %d", cred.Pid, cred.Uid, me)
	}
	return nil
}

// writeProto opens a unix front connection with the protocol it carries.
func writeProto(c net.Conn, proto string) error {
	if len(proto) == 0 || len(proto) > 255 {
		return fmt.Errorf("protocol name %q: want 1 to 255 bytes", proto)
	}
	_, err := c.Write(append([]byte{byte(len(proto))}, proto...))
	return err
}

// readProto reads the protocol a unix front connection opens with, and
// nothing past it: what follows is the client's.
func readProto(c net.Conn) (string, error) {
	c.SetReadDeadline(time.Now().Add(protoTimeout))
	defer c.SetReadDeadline(time.Time{})
	var n [1]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return "", err
	}
	name := make([]byte, n[0])
	if _, err := io.ReadFull(c, name); err != nil {
		return "", err
	}
	switch p := string(name); p {
	case wire.ProtoProxy, ProtoStatus, ProtoHandoff, ProtoProxyAhead, ProtoHandoffAhead:
		return p, nil
	default:
		return "", fmt.Errorf("unknown protocol %q", p)
	}
}

// openUnix admits a unix front connection: its peer's user, then its
// protocol.
func (e *Engine) openUnix(_ context.Context, c net.Conn) (net.Conn, string, error) {
	if err := sameUser(c); err != nil {
		return nil, "", err
	}
	proto, err := readProto(c)
	if err != nil {
		return nil, "", fmt.Errorf("read protocol: %w", err)
	}
	return c, proto, nil
}

// dialUnix opens a connection to the unix front at path carrying proto,
// once the listening process is known to run as this one's user: the
// check that stands in for the engine's certificate on this hop.
func dialUnix(ctx context.Context, path, proto string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("dial engine %s: %w", path, err)
	}
	if err := sameUser(c); err != nil {
		c.Close()
		return nil, fmt.Errorf("engine %s: %w", path, err)
	}
	if err := writeProto(c, proto); err != nil {
		c.Close()
		return nil, fmt.Errorf("dial engine %s: %w", path, err)
	}
	return c, nil
}
