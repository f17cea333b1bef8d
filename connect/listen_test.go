package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"github.com/wakegate/wakegate/internal/testserve"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseListenAddress(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in, network, address string
		localOnly            bool
		err                  string
	}{
		{in: "127.0.0.1:9080", network: "tcp", address: "127.0.0.1:9080", localOnly: true},
		{in: "127.1.2.3:0", network: "tcp", address: "127.1.2.3:0", localOnly: true},
		{in: "[::1]:9080", network: "tcp", address: "[::1]:9080", localOnly: true},
		{in: "localhost:9080", network: "tcp", address: "localhost:9080", localOnly: true},
		{in: "0.0.0.0:9080", network: "tcp", address: "0.0.0.0:9080"},
		{in: ":9080", network: "tcp", address: ":9080"},
		{in: "[::]:9080", network: "tcp", address: "[::]:9080"},
		{in: "10.1.2.3:9080", network: "tcp", address: "10.1.2.3:9080"},
		{in: "[::ffff:10.1.2.3]:9080", network: "tcp", address: "[::ffff:10.1.2.3]:9080"},
		{in: "runner.example.com:9080", network: "tcp", address: "runner.example.com:9080"},
		{in: "unix:///run/wg.sock", network: "unix", address: "/run/wg.sock", localOnly: true},
		{in: "unix:///run/../tmp/wg.sock", network: "unix", address: "/tmp/wg.sock", localOnly: true},
		{in: "unix://wg.sock", network: "unix", address: filepath.Join(cwd, "wg.sock"), localOnly: true},
		{in: "unix://", err: "no socket path"},
		{in: "unix:///tmp/a?b", err: "cannot contain ?, #, %"},
		{in: "unix:///tmp/a%41b.sock", err: "cannot contain ?, #, %"},
		{in: "unix:///" + strings.Repeat("a", 120), err: "over the 107"},
		{in: "tcp://127.0.0.1:9080", err: "want HOST:PORT or unix:///PATH"},
		{in: "nonsense", err: "missing port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, err := ParseListenAddress(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseListenAddress(%q) = %+v, %v; want an error containing %q", tt.in, a, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseListenAddress(%q): %v", tt.in, err)
			}
			if a.Network != tt.network || a.Address != tt.address {
				t.Fatalf("ParseListenAddress(%q) = %+v, want %s %s", tt.in, a, tt.network, tt.address)
			}
			if a.LocalOnly() != tt.localOnly {
				t.Fatalf("%q: LocalOnly = %v, want %v", tt.in, a.LocalOnly(), tt.localOnly)
			}
		})
	}
}

// socketDir is a fresh directory with a short path: sun_path holds 108
// bytes, more than t.TempDir() leaves room for.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// echoGateway is an mTLS server that echoes each connection back, with
// client credentials it trusts.
func echoGateway(t *testing.T) (addr string, client *tls.Config) {
	t.Helper()
	ca := newTestCA(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.server)
	if err != nil {
		t.Fatal(err)
	}
	testserve.Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(c, c)
	})
	return ln.Addr().String(), ca.client
}

func TestUnixSocketSidecarIsPrivateProxiesAndIsRemovedOnShutdown(t *testing.T) {
	dir := socketDir(t)
	path := filepath.Join(dir, "bk.sock")
	// With no umask at all a plain bind would make the socket 0777: the
	// mode must not depend on it.
	old := syscall.Umask(0)
	ln, err := Listen(ListenAddress{Network: "unix", Address: path})
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %s, want a socket with 0600", path, fi.Mode())
	}
	if got, want := ClientAddress(ln), "unix://"+path; got != want {
		t.Fatalf("ClientAddress = %q, want %q", got, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("%s holds %v, want only the socket (the staging directory is left behind)", dir, entries)
	}

	gw, client := echoGateway(t)
	sc, err := New(Config{Gateways: []string{gw}, TLS: client})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- sc.Serve(ln) }()

	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	c.(*net.UnixConn).CloseWrite()
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(got) != "ping" {
		t.Fatalf("through the socket = %q, %v; want the gateway's echo %q", got, err, "ping")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v, want ErrServerClosed", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket after shutdown: Lstat = %v, want it removed", err)
	}
}

func TestUnixSocketPathAlreadyTaken(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		err     string // "" if the path is taken over
	}{
		{"a stale socket is replaced", func(t *testing.T, path string) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false) // as a killed sidecar leaves it
			ln.Close()
		}, ""},
		{"a regular file is refused", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "exists and is not a socket"},
		{"a symbolic link is refused", func(t *testing.T, path string) {
			if err := os.Symlink(filepath.Join(filepath.Dir(path), "elsewhere"), path); err != nil {
				t.Fatal(err)
			}
		}, "exists and is not a socket"},
		{"a live socket is refused", func(t *testing.T, path string) {
			ln, err := Listen(ListenAddress{Network: "unix", Address: path})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}, "another sidecar is serving " + "PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(socketDir(t), "bk.sock")
			tt.prepare(t, path)
			before, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := Listen(ListenAddress{Network: "unix", Address: path})
			if want := strings.ReplaceAll(tt.err, "PATH", path); want != "" {
				if err == nil {
					ln.Close()
					t.Fatalf("Listen on %s succeeded, want an error containing %q", path, want)
				}
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("Listen = %v, want an error containing %q", err, want)
				}
				if after, err := os.Lstat(path); err != nil || !os.SameFile(before, after) {
					t.Fatalf("a refused Listen changed %s (%v)", path, err)
				}
				if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
					t.Fatalf("a refused Listen left %v behind", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			after, err := os.Lstat(path)
			if err != nil || os.SameFile(before, after) || after.Mode().Perm() != 0o600 {
				t.Fatalf("the stale socket was not replaced by a 0600 one (%v)", err)
			}
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatalf("dial the replacing socket: %v", err)
			}
			c.Close()
		})
	}
}

// A socket that someone else has put at the path since is not removed when
// the listener closes.
func TestUnixSocketCloseLeavesAReplacement(t *testing.T) {
	path := filepath.Join(socketDir(t), "bk.sock")
	ln, err := Listen(ListenAddress{Network: "unix", Address: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Close removed what replaced its socket: %v", err)
	}
}
