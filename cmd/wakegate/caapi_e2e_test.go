package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

var caConnsRE = regexp.MustCompile(`msg="open-files limit" limit=\d+ ca_api_max_conns=(\d+)`)

// TestAWakeDoesNotWaitBehindTheCAAPIsPublicCallers: anyone on the internet
// can fill the public CA API's connection cap; a local engine enrols at a
// loopback listener of its own, so a wake goes on while the public API is
// full. (It used to wait for a free slot: with callers that keep their
// connections busy, for ever.)
func TestAWakeDoesNotWaitBehindTheCAAPIsPublicCallers(t *testing.T) {
	g := startCertGateway(t)
	m, _ := g.logs.waitFor(t, caConnsRE, 0, time.Second)
	slots, _ := strconv.Atoi(m[1])
	// Credentials issued offline: 'certs issue' would go through the public
	// API, and its idle keep-alive connection would hold a slot.
	creds := filepath.Join(t.TempDir(), "creds")
	ca, err := certs.Load(g.caDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certs.Client, "team-a", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteClientCreds(creds, leaf); err != nil {
		t.Fatal(err)
	}

	// Fill every slot of the public API with connections that keep
	// asking for something, so none idles out.
	addr := strings.TrimPrefix(g.caURL, "https://")
	cfg := &tls.Config{InsecureSkipVerify: true}
	attackers := make([]*attacker, slots)
	var wg sync.WaitGroup
	errs := make(chan error, slots)
	for i := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 20 * time.Second}, "tcp", addr, cfg)
			if err != nil {
				errs <- err
				return
			}
			a := &attacker{c: c, r: bufio.NewReader(c)}
			attackers[i] = a
			if err := a.ask(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("attacker connection: %v", err)
	}
	t.Cleanup(func() {
		for _, a := range attackers {
			if a != nil {
				a.c.Close()
			}
		}
	})
	// Each attacker asks again every second, so none idles out.
	stop := make(chan struct{})
	refreshed := make(chan error, slots)
	for _, a := range attackers {
		go func() {
			for {
				select {
				case <-stop:
					refreshed <- nil
					return
				case <-time.After(time.Second):
				}
				if err := a.ask(); err != nil {
					refreshed <- err
					return
				}
			}
		}()
	}
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 300 * time.Millisecond}, "tcp", addr, cfg); err == nil {
		c.Close()
		t.Errorf("the public CA API served a connection beyond its %d slots", slots)
	}

	out, err := g.connectWait(t, "--creds", creds)
	close(stop)
	for range attackers {
		if rerr := <-refreshed; rerr != nil {
			t.Fatalf("an attacker connection failed, so the public API was not full throughout: %v", rerr)
		}
	}
	if err != nil {
		t.Fatalf("connect --wait while the public CA API is full: %v\n%s\ngateway log:\n%s", err, out, g.logs)
	}
}

// attacker is a client of the CA API that holds its connection by asking
// for the roots again and again.
type attacker struct {
	c *tls.Conn
	r *bufio.Reader
}

func (a *attacker) ask() error {
	a.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(a.c, "GET /roots HTTP/1.1\r\nHost: ca\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(a.r, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
