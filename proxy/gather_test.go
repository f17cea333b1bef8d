package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wakegate/wakegate/proxy"
)

// countingConn counts the writes that reach its socket.
type countingConn struct {
	*net.TCPConn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.TCPConn.Write(p)
}

// fullRecords is cfg with every record full from the first byte
// (crypto/tls otherwise starts a connection with small ones).
func fullRecords(cfg tlsConfigs) tlsConfigs {
	srv, cli := cfg.server.Clone(), cfg.client.Clone()
	srv.DynamicRecordSizingDisabled = true
	cli.DynamicRecordSizingDisabled = true
	return tlsConfigs{srv, cli}
}

// handshake makes the TLS handshake of server and client.
func handshake(t *testing.T, server, client *tls.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- server.HandshakeContext(ctx) }()
	if err := client.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
}

// readN reads n bytes from c within the guard.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(guard))
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return got
}

func TestAChunkWrittenIntoTLSLeavesInOneWrite(t *testing.T) {
	cfg := fullRecords(newTLS(t))
	rawServer, rawClient := tcpPair(t)
	sock := &countingConn{TCPConn: rawClient.(*net.TCPConn)}
	client := tls.Client(proxy.Gather(sock), cfg.client)
	server := tls.Server(rawServer, cfg.server)
	handshake(t, server, client)

	for _, size := range []int{4 * proxy.MaxRecord, 16 * proxy.MaxRecord} {
		chunk := randomBytes(t, size)
		before := sock.writes.Load()
		done := make(chan error, 1)
		go func() { _, err := proxy.WriteChunk(client, chunk); done <- err }()
		if got := readN(t, server, size); !bytes.Equal(got, chunk) {
			t.Fatalf("%d bytes: the server read other bytes than were written", size)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		records := int64(size / proxy.MaxRecord)
		// What one gathering holds (a chunk's records and then some)
		// leaves in one write; a larger write in as few as fit.
		want := (records + 3) / 4
		if n := sock.writes.Load() - before; n != want {
			t.Errorf("a %d KiB chunk (%d records) took %d writes on the socket; want %d", size>>10, records, n, want)
		}
	}

	// Outside a copy's chunk (a handshake, an alert, a direct write), each
	// record is written as crypto/tls writes it.
	before := sock.writes.Load()
	chunk := randomBytes(t, 4*proxy.MaxRecord)
	go client.Write(chunk)
	readN(t, server, len(chunk))
	if n := sock.writes.Load() - before; n != 4 {
		t.Errorf("a direct write of 4 records took %d writes on the socket; want 4, one each", n)
	}
}

// countingWriter counts the writes a copy makes into it.
type countingWriter struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// awaitQueued waits until c's socket has n bytes unread.
func awaitQueued(t *testing.T, c net.Conn, n int) {
	t.Helper()
	rc, err := rawTCP(c).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(guard)
	for {
		queued := 0
		rc.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		if queued >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes queued on the socket after %s; want %d", queued, guard, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestACopyFromTLSWritesTheRecordsThatHaveComeAtOnce(t *testing.T) {
	bothWays(t, testACopyFromTLSWritesTheRecordsThatHaveComeAtOnce)
}

func testACopyFromTLSWritesTheRecordsThatHaveComeAtOnce(t *testing.T, way way) {
	cfg := fullRecords(newTLS(t))
	server, peer, _ := tlsPair(t, cfg)
	out, outPeer := tcpPair(t)
	dst := &countingWriter{Conn: out}

	// Four full records wait on the socket before the copy begins.
	data := randomBytes(t, 4*proxy.MaxRecord)
	if _, err := peer.Write(data); err != nil {
		t.Fatal(err)
	}
	awaitQueued(t, server, len(data)+4*22)

	way.start(t, context.Background(), server, dst, time.Minute)
	if got := readN(t, outPeer, len(data)); !bytes.Equal(got, data) {
		t.Fatal("the copy wrote other bytes than came")
	}
	// The idle buffer's first read, then the rest of the first record
	// with the three that came after it. Record by record, it is five.
	if n := dst.writes.Load(); n != 2 {
		t.Errorf("four records that had all come were written in %d writes; want 2 (the idle buffer's, then the rest)", n)
	}
}

// splitConn holds back the second half of its armed write until released:
// a record that has partly come.
type splitConn struct {
	net.Conn
	armed   atomic.Bool
	release chan struct{}
}

func (c *splitConn) Write(p []byte) (int, error) {
	if !c.armed.CompareAndSwap(true, false) {
		return c.Conn.Write(p)
	}
	half := len(p) / 2
	if n, err := c.Conn.Write(p[:half]); err != nil {
		return n, err
	}
	<-c.release
	n, err := c.Conn.Write(p[half:])
	return half + n, err
}

func TestACopyWritesWhatCameWithoutWaitingForARecordsRest(t *testing.T) {
	bothWays(t, testACopyWritesWhatCameWithoutWaitingForARecordsRest)
}

func testACopyWritesWhatCameWithoutWaitingForARecordsRest(t *testing.T, way way) {
	cfg := fullRecords(newTLS(t))
	rawServer, rawClient := tcpPair(t)
	split := &splitConn{Conn: rawClient, release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(split.release) }) }
	t.Cleanup(release)
	server := tls.Server(proxy.Gather(rawServer), cfg.server)
	peer := tls.Client(split, cfg.client)
	handshake(t, server, peer)

	// A full record, and half of the next, wait on the socket before the
	// copy begins: reading ahead after the first, it finds half a record,
	// and writes the first without waiting for the rest.
	first, second := randomBytes(t, proxy.MaxRecord), randomBytes(t, proxy.MaxRecord)
	if _, err := peer.Write(first); err != nil {
		t.Fatal(err)
	}
	split.armed.Store(true)
	wrote := make(chan error, 1)
	go func() { _, err := peer.Write(second); wrote <- err }()
	const record = proxy.MaxRecord + 22
	awaitQueued(t, server, record+record/2)

	out, outPeer := tcpPair(t)
	way.start(t, context.Background(), server, out, time.Minute)
	if got := readN(t, outPeer, len(first)); !bytes.Equal(got, first) {
		t.Fatal("the first record came through changed")
	}
	release()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if got := readN(t, outPeer, len(second)); !bytes.Equal(got, second) {
		t.Fatal("the record whose rest came later came through changed")
	}
	// And the connection goes on as before.
	more := randomBytes(t, 3*proxy.MaxRecord)
	go peer.Write(more)
	if got := readN(t, outPeer, len(more)); !bytes.Equal(got, more) {
		t.Fatal("records after it came through changed")
	}
}

// serveOne listens on loopback and serves the first connection with
// serve, whose error comes on the channel.
func serveOne(t *testing.T, serve func(net.Conn) error) (addr string, served <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(guard))
		ch <- serve(c)
	}()
	return ln.Addr().String(), ch
}

func TestDialTLSNamesTheServerByItsAddress(t *testing.T) {
	cfg := newTLS(t)
	addr, served := serveOne(t, func(c net.Conn) error { return tls.Server(c, cfg.server).Handshake() })
	cli := cfg.client.Clone()
	cli.ServerName = ""
	_, port, _ := net.SplitHostPort(addr)
	c, err := proxy.DialTLS(context.Background(), &net.Dialer{Timeout: guard}, net.JoinHostPort("localhost", port), cli)
	if err != nil {
		t.Fatalf("DialTLS to localhost, no ServerName set: %v", err)
	}
	defer c.Close()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if got := c.ConnectionState().ServerName; got != "localhost" {
		t.Errorf("ServerName %q; want the address's host, localhost", got)
	}
	if _, ok := c.NetConn().(*proxy.Gathered); !ok {
		t.Errorf("the socket under the connection is a %T; want a *proxy.Gathered", c.NetConn())
	}
	if cli.ServerName != "" {
		t.Error("DialTLS changed the caller's config")
	}
}

func TestDialTLSClosesTheSocketOfAFailedHandshake(t *testing.T) {
	cfg := newTLS(t)
	for _, tc := range []struct {
		name   string
		server func(net.Conn) // what the far end does
		want   string
	}{
		{"not TLS", func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) }, "first record does not look like a TLS handshake"},
		{"silent", func(net.Conn) {}, "deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, eof := serveOne(t, func(c net.Conn) error {
				tc.server(c)
				_, err := io.Copy(io.Discard, c) // until the dialler closes
				return err
			})
			_, err := proxy.DialTLS(context.Background(), &net.Dialer{Timeout: 200 * time.Millisecond}, addr, cfg.client)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DialTLS: %v; want an error saying %q", err, tc.want)
			}
			if err := <-eof; err != nil {
				t.Fatalf("the server end: %v; want EOF, the dialler closing its socket", err)
			}
		})
	}
}

// TestGatheredStaysSmall: every TLS connection of the gateway, an engine
// and connect keeps one for its life, idle ones by the thousand.
func TestGatheredStaysSmall(t *testing.T) {
	if proxy.GatheredSize > 64 {
		t.Fatalf("Gathered is %d bytes; want at most 64, its size class: its buffer is only borrowed while a chunk is written", proxy.GatheredSize)
	}
}
