package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// pipeListener is a listener whose connections are net.Pipe ends, so that
// a test inside a synctest bubble can tell when every goroutine is blocked.
type pipeListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// dial hands the server one end of a pipe and returns the other.
func (l *pipeListener) dial(t *testing.T) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	select {
	case l.conns <- server:
	case <-l.done:
		t.Fatal("dial: the listener is closed")
	}
	return client
}

// serve runs s.Serve(ln) and returns its result's channel.
func serve(s *Server, ln net.Listener) <-chan error {
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	return served
}

func TestServerShutdownWaitsForAHandlerThatFinishesWithinTheBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		running := make(chan struct{})
		s := NewServer(func(ctx context.Context, c net.Conn) {
			close(running)
			defer c.Close()
			b := make([]byte, 1)
			c.Read(b) // the client's last byte
			c.Write(b)
		}, nil)
		ln := newPipeListener()
		served := serve(s, ln)
		c := ln.dial(t)
		defer c.Close()
		// Accepted is not yet served: a connection Shutdown finds accepted
		// but not handed to a handler is closed, not waited for.
		<-running

		shut := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			shut <- s.Shutdown(ctx)
		}()
		synctest.Wait()
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned (%v) while a handler still ran within the bound", err)
		default:
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve = %v, want ErrServerClosed once Shutdown began", err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatalf("the drained connection was closed early: %v", err)
		}
		got := make([]byte, 1)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "x" {
			t.Fatalf("reply %q, %v: the handler did not finish its work", got, err)
		}
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown = %v, want nil: the handler finished in time", err)
		}
		if s.Context().Err() == nil {
			t.Fatal("the handlers' context outlives the server")
		}
	})
}

func TestServerShutdownForcesHandlersOnceItsBoundPasses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := newPipeListener()
		var mu sync.Mutex
		var ended []string
		s := NewServer(func(ctx context.Context, c net.Conn) {
			defer c.Close()
			// The first handler waits on its connection only, the second on
			// its context only: forcing must reach both.
			b := make([]byte, 1)
			if _, err := c.Read(b); err != nil {
				mu.Lock()
				ended = append(ended, "read")
				mu.Unlock()
				return
			}
			<-ctx.Done()
			mu.Lock()
			ended = append(ended, "ctx")
			mu.Unlock()
		}, nil)
		served := serve(s, ln)
		silent := ln.dial(t)
		defer silent.Close()
		talker := ln.dial(t)
		defer talker.Close()
		if _, err := talker.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}

		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := s.Shutdown(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "2 connections forced closed") {
			t.Fatalf("Shutdown = %v, want 2 connections forced closed at the deadline", err)
		}
		if took := time.Since(began); took != 10*time.Second {
			t.Fatalf("Shutdown forced after %s, want its bound, 10s", took)
		}
		mu.Lock()
		if len(ended) != 2 {
			t.Fatalf("handlers ended by %v, want both ended before Shutdown returned", ended)
		}
		mu.Unlock()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve = %v, want ErrServerClosed", err)
		}
	})
}

func TestServerShutdownIsSafeTwiceAndServeAfterItRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewServer(func(_ context.Context, c net.Conn) { c.Close() }, nil)
		a, b := newPipeListener(), newPipeListener()
		servedA, servedB := serve(s, a), serve(s, b)
		a.dial(t).Close()
		b.dial(t).Close()
		for range 2 {
			if err := s.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown = %v, want nil", err)
			}
		}
		for _, served := range []<-chan error{servedA, servedB} {
			if err := <-served; !errors.Is(err, ErrServerClosed) {
				t.Fatalf("Serve = %v, want ErrServerClosed for every listener", err)
			}
		}
		late := newPipeListener()
		if err := s.Serve(late); !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve after Shutdown = %v, want ErrServerClosed", err)
		}
		select {
		case <-late.done:
		default:
			t.Fatal("Serve after Shutdown left its listener open")
		}
	})
}

// brokenListener fails every Accept with a permanent error.
type brokenListener struct{ *pipeListener }

func (*brokenListener) Accept() (net.Conn, error) { return nil, errors.New("listener broke") }

func TestServerReturnsAnAcceptErrorThatIsNotTemporary(t *testing.T) {
	s := NewServer(func(_ context.Context, c net.Conn) { c.Close() }, nil)
	ln := &brokenListener{newPipeListener()}
	if err := s.Serve(ln); err == nil || errors.Is(err, ErrServerClosed) || !strings.Contains(err.Error(), "listener broke") {
		t.Fatalf("Serve = %v, want the accept error", err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Real loopback TCP: the listener's close ends the accept loop, and a
// handler's connection is the accepted one.
func TestServerOverLoopbackTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(func(_ context.Context, c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	}, nil)
	served := serve(s, ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	c.Write([]byte("ping"))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(got) != "ping" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("the listener still accepts after Shutdown")
	}
}

func TestServerWaitsForAConnectionItsHandlerKeptAndForcesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := newPipeListener()
		var s *Server
		kept := make(chan struct{})
		s = NewServer(func(ctx context.Context, c net.Conn) {
			release := s.Keep(c)
			go func() {
				defer close(kept)
				defer release()
				io.Copy(io.Discard, c) // until the connection is closed
			}()
		}, nil)
		served := serve(s, ln)
		c := ln.dial(t)
		defer c.Close()
		synctest.Wait() // the handler has returned; its goroutine reads

		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := s.Shutdown(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 connections forced closed") {
			t.Fatalf("Shutdown = %v, want the kept connection forced closed at the deadline", err)
		}
		if took := time.Since(began); took != 10*time.Second {
			t.Fatalf("Shutdown returned after %s, want its bound, 10s: it did not wait for the kept connection", took)
		}
		select {
		case <-kept:
		default:
			t.Fatal("Shutdown returned before the kept connection's goroutine released it")
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve = %v, want ErrServerClosed", err)
		}
	})
}
