package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeCert is a certificate whose only meaningful fields are its serial and
// validity, which is all a Renewer reads.
func fakeCert(serial int64, life time.Duration) *tls.Certificate {
	now := time.Now()
	return &tls.Certificate{Leaf: &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		NotBefore:    now.Add(-time.Minute), // backdated, as the CA does
		NotAfter:     now.Add(life),
	}}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRenewerSwapsAtTwoThirdsOfLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const life = 30 * time.Second
		var serial int64 = 1
		r, err := NewRenewer("test", fakeCert(serial, life), func(ctx context.Context, cur *tls.Certificate) (*tls.Certificate, error) {
			serial++
			return fakeCert(serial, life), nil
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); r.Run(ctx) }()

		// Before 2/3 less the largest jitter (1/20): not yet, despite the
		// backdated NotBefore.
		time.Sleep(life*2/3 - life/20 - time.Second)
		synctest.Wait()
		if got := r.Current().Leaf.SerialNumber.Int64(); got != 1 {
			t.Fatalf("renewed too early: serial %d", got)
		}
		time.Sleep(life/20 + 2*time.Second)
		synctest.Wait()
		if got := r.Current().Leaf.SerialNumber.Int64(); got != 2 {
			t.Fatalf("not renewed at two thirds of its life: serial %d", got)
		}
		time.Sleep(life)
		synctest.Wait()
		if r.Renewals() < 2 {
			t.Fatalf("renewals = %d, want the second certificate renewed too", r.Renewals())
		}
		cancel()
		<-done
	})
}

func TestRenewerKeepsOldCertAndLogsLouderNearExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const life = 60 * time.Second
		var logs lockedBuf
		log := slog.New(slog.NewTextHandler(&logs, nil))
		var fail atomic.Bool
		fail.Store(true)
		r, err := NewRenewer("test", fakeCert(1, life), func(ctx context.Context, cur *tls.Certificate) (*tls.Certificate, error) {
			if fail.Load() {
				return nil, errors.New("CA unreachable")
			}
			return fakeCert(2, life), nil
		}, log)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); r.Run(ctx) }()

		time.Sleep(life * 2 / 3)
		synctest.Wait()
		if !strings.Contains(logs.String(), "level=WARN msg=\"certificate renewal failed, retrying\"") {
			t.Fatalf("no warning after a failed renewal:\n%s", logs.String())
		}
		if got := r.Current().Leaf.SerialNumber.Int64(); got != 1 {
			t.Fatalf("a failed renewal replaced the certificate (serial %d)", got)
		}
		time.Sleep(life/3 - life/10)
		synctest.Wait()
		if !strings.Contains(logs.String(), "level=ERROR msg=\"certificate renewal keeps failing and expiry is near\"") {
			t.Fatalf("no error as expiry nears:\n%s", logs.String())
		}
		fail.Store(false)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := r.Current().Leaf.SerialNumber.Int64(); got != 2 {
			t.Fatalf("renewal did not recover once the CA answered (serial %d)", got)
		}
		cancel()
		<-done
	})
}

func TestRenewerChangedIsClosedByEachRenewalOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const life = 30 * time.Second
		var serial int64 = 1
		r, err := NewRenewer("test", fakeCert(serial, life), func(ctx context.Context, cur *tls.Certificate) (*tls.Certificate, error) {
			serial++
			return fakeCert(serial, life), nil
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		first := r.Changed()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); r.Run(ctx) }()

		time.Sleep(life / 2)
		synctest.Wait()
		select {
		case <-first:
			t.Fatal("Changed closed before any renewal")
		default:
		}
		<-first // the renewal at two thirds of the life
		if got := r.Current().Leaf.SerialNumber.Int64(); got != 2 {
			t.Fatalf("after Changed closed, Current has serial %d, want 2", got)
		}
		second := r.Changed()
		if second == first {
			t.Fatal("Changed returned the closed channel again after the renewal")
		}
		select {
		case <-second:
			t.Fatal("the new Changed channel is already closed")
		default:
		}
		cancel()
		<-done
	})
}
