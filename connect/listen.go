package connect

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// unixScheme prefixes a unix socket path in --listen and in the address
// clients are given (BUILDKIT_HOST, _EXPERIMENTAL_DAGGER_RUNNER_HOST).
const unixScheme = "unix://"

// maxSocketPath is the longest socket path bound: sun_path holds 108 bytes,
// and clients written in C want room for the terminating NUL.
const maxSocketPath = 107

// ListenAddress is where the sidecar accepts its clients: a TCP host:port,
// or a unix socket.
type ListenAddress struct {
	Network string // "tcp" or "unix"
	Address string // host:port, or the socket's absolute path
}

// ParseListenAddress reads a --listen value: HOST:PORT, or unix://PATH with
// PATH made absolute (unix:///run/x.sock, or unix://x.sock in the working
// directory). Its errors do not repeat s.
func ParseListenAddress(s string) (ListenAddress, error) {
	if path, ok := strings.CutPrefix(s, unixScheme); ok {
		if path == "" {
			return ListenAddress{}, errors.New("no socket path: want unix:///PATH")
		}
		// Clients read the address back as a URL: a query or fragment
		// would cut the path short, a % escape would be decoded to
		// another path, and control characters are refused.
		if strings.ContainsFunc(path, func(r rune) bool { return r == '?' || r == '#' || r == '%' || r < 0x20 || r == 0x7f }) {
			return ListenAddress{}, errors.New("a socket path cannot contain ?, #, % or control characters (clients read it as a URL)")
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return ListenAddress{}, err
		}
		if len(abs) > maxSocketPath {
			return ListenAddress{}, fmt.Errorf("socket path %s is %d bytes, over the %d a unix socket allows", abs, len(abs), maxSocketPath)
		}
		return ListenAddress{Network: "unix", Address: abs}, nil
	}
	if strings.Contains(s, "://") {
		return ListenAddress{}, errors.New("want HOST:PORT or unix:///PATH")
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return ListenAddress{}, err
	}
	return ListenAddress{Network: "tcp", Address: s}, nil
}

// LocalOnly reports whether no other machine can reach the address: a unix
// socket, or TCP on a loopback host (127.0.0.0/8, ::1, localhost). An empty
// host, 0.0.0.0 and :: listen on every interface.
func (a ListenAddress) LocalOnly() bool {
	if a.Network == "unix" {
		return true
	}
	host, _, err := net.SplitHostPort(a.Address)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (a ListenAddress) String() string {
	if a.Network == "unix" {
		return unixScheme + a.Address
	}
	return a.Address
}

// Listen opens a listener on a. A unix socket is created with mode 0600
// (only this user may connect) and removed when the listener closes; a
// stale socket left by a dead sidecar is replaced, anything else at the
// path is refused.
func Listen(a ListenAddress) (net.Listener, error) {
	if a.Network == "unix" {
		return listenUnix(a.Address)
	}
	ln, err := net.Listen(a.Network, a.Address)
	if err != nil {
		return nil, fmt.Errorf("connect: listen on %s: %w", a, err)
	}
	return ln, nil
}

// ClientAddress is the address a BuildKit or Dagger client is given for
// ln: tcp://HOST:PORT, or unix:///PATH.
func ClientAddress(ln net.Listener) string {
	if ua, ok := ln.Addr().(*net.UnixAddr); ok {
		return unixScheme + ua.Name
	}
	return "tcp://" + ln.Addr().String()
}

// listenUnix binds the socket in a fresh private directory next to path,
// sets its mode to 0600 there, and renames it onto path. bind(2) creates
// the socket with the process's umask, and the umask is process-wide (other
// goroutines create files meanwhile), so narrowing it is not safe; instead
// the socket is never reachable by another user before its mode is 0600:
// the directory is 0700 until the rename, and the rename puts the finished
// socket in place in one step, atomically replacing a stale one. The
// directory is next to path so that the rename stays on one file system.
func listenUnix(path string) (net.Listener, error) {
	if err := checkSocketPath(path); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".wg")
	if err != nil {
		return nil, fmt.Errorf("connect: listen on %s%s: %w", unixScheme, path, err)
	}
	defer os.RemoveAll(dir) // empty after the rename
	staged := filepath.Join(dir, "s")
	if len(staged) > maxSocketPath {
		return nil, fmt.Errorf("connect: listen on %s%s: the socket is created in %s first, which is over the %d bytes a unix socket path allows; use a shorter path",
			unixScheme, path, staged, maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: staged, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connect: listen on %s%s: %w", unixScheme, path, err)
	}
	// After the rename the staged name is gone; the listener removes path
	// itself.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, fmt.Errorf("connect: listen on %s%s: %w", unixScheme, path, err)
	}
	if err := os.Chmod(staged, 0o600); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(staged)
	if err != nil {
		return fail(err)
	}
	if err := os.Rename(staged, path); err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: ln, path: path, file: fi}, nil
}

// checkSocketPath refuses a path that holds something other than a stale
// socket. A socket nothing answers on is left for the rename to replace.
// (A sidecar starting on the same path between this check and the rename
// loses its path: two sidecars started at once on one path are a mistake
// this does not guard against.)
func checkSocketPath(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("connect: listen on %s%s: %w", unixScheme, path, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("connect: listen on %s%s: %s exists and is not a socket; remove it or choose another path", unixScheme, path, path)
	}
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("connect: listen on %s%s: another sidecar is serving %s", unixScheme, path, path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil // stale: its sidecar is gone
	default:
		return fmt.Errorf("connect: listen on %s%s: %s exists and its server cannot be checked: %w", unixScheme, path, path, err)
	}
}

// unixListener serves on a socket renamed into place: it reports the final
// path as its address and removes it on Close, unless another socket has
// replaced it since.
type unixListener struct {
	*net.UnixListener
	path   string
	file   os.FileInfo // the socket created, to recognise it at Close
	remove sync.Once
}

func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.remove.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.file) {
			os.Remove(l.path)
		}
	})
	return err
}
