package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// TestSIGTERMLetsOpenStreamsFinish runs the real gateway binary with the
// exec provider, whose engine is 'wakegate engine' in front of an echo
// stand-in for buildkitd (testdata/echoengine), opens proxied streams,
// sends the gateway SIGTERM mid-stream, and checks that every stream
// still gets every byte it sends echoed back, that the gateway exits 0
// within its shutdown bound, and that no engine process is left.
func TestSIGTERMLetsOpenStreamsFinish(t *testing.T) {
	bin := os.Getenv("WAKEGATE_BIN")
	work := t.TempDir()
	ee := newEchoExec(t)
	root := ee.root
	caDir, creds := filepath.Join(work, "ca"), filepath.Join(work, "creds")
	mustRun(t, "certs", "init", "--dir", caDir, "--no-password")
	mustRun(t, "certs", "issue", "--dir", caDir, "--name", "ci", "--out", creds)

	logs := newLogWatch()
	gw := exec.Command(bin, append(append([]string{"gateway", "--ca-dir", caDir}, ee.args...),
		"--listen", "127.0.0.1:0", "--admin", "", "--ca-listen", "127.0.0.1:0", "--idle", "60s")...)
	gw.Env = append(append(os.Environ(), "WAKEGATE_CA_PASSWORD="), ee.env...)
	gw.Stdout, gw.Stderr = logs, logs
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	// The engine and exec commands inherit the log pipe: Wait gives up
	// on it soon after the gateway itself exits.
	gw.WaitDelay = 5 * time.Second
	exited := make(chan struct{})
	var waitErr error // set before exited closes
	go func() { waitErr = gw.Wait(); close(exited) }()
	t.Cleanup(func() {
		gw.Process.Kill()
		<-exited
	})
	m, _ := logs.waitFor(t, listeningRE, 0, 20*time.Second)

	cert, roots, err := certs.LoadClientCreds(creds)
	if err != nil {
		t.Fatal(err)
	}
	cfg := certs.ClientTLS(func() *tls.Certificate { return cert }, roots, "127.0.0.1")

	// Each stream sends a first chunk and reads its echo (the engine is
	// awake and the stream proxied), then keeps sending across the
	// SIGTERM for about 2 s, half-closes and reads to the end.
	const streams, chunk, after = 4, 32 << 10, 64
	terminated := make(chan struct{})
	type result struct {
		sent, got int
		same      bool
		err       error
	}
	results := make([]result, streams)
	early := make([]error, streams) // each set before its opened.Done
	var opened, wg sync.WaitGroup
	opened.Add(streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			c, err := tls.Dial("tcp", m[1], cfg)
			if err != nil {
				r.err, early[i] = err, err
				opened.Done()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			data := bytes.Repeat([]byte(fmt.Sprintf("stream %d ", i)), chunk/8)[:chunk]
			first := make([]byte, chunk)
			if _, err := c.Write(data); err == nil {
				_, err = io.ReadFull(c, first)
				r.err = err
			}
			early[i] = r.err
			opened.Done()
			if r.err != nil {
				return
			}
			sentSum, gotSum := sha256.New(), sha256.New()
			sentSum.Write(data)
			gotSum.Write(first)
			r.sent, r.got = chunk, chunk
			readDone := make(chan error, 1)
			go func() {
				n, err := io.Copy(gotSum, c)
				r.got += int(n)
				readDone <- err
			}()
			<-terminated
			for range after {
				if _, err := c.Write(data); err != nil {
					r.err = fmt.Errorf("write after SIGTERM: %w", err)
					break
				}
				sentSum.Write(data)
				r.sent += chunk
				time.Sleep(30 * time.Millisecond)
			}
			c.CloseWrite()
			if err := <-readDone; err != nil && r.err == nil {
				r.err = fmt.Errorf("read: %w", err)
			}
			r.same = bytes.Equal(sentSum.Sum(nil), gotSum.Sum(nil))
		}()
	}
	opened.Wait()
	for i, err := range early {
		if err != nil {
			t.Fatalf("stream %d before SIGTERM: %v\ngateway log:\n%s", i, err, logs)
		}
	}
	pid := enginePID(t, root)

	mark := logs.len()
	sigAt := time.Now()
	if err := gw.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	logs.waitFor(t, regexp.MustCompile(`msg="gateway shutting down"`), mark, 10*time.Second)
	close(terminated)
	wg.Wait()
	streamsDone := time.Since(sigAt)

	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		// A goroutine dump says where it is stuck.
		gw.Process.Signal(syscall.SIGQUIT)
		<-exited
		engineLog, _ := os.ReadFile(filepath.Join(root, "engine-0", "engine.log"))
		t.Fatalf("gateway still running 30 s after SIGTERM\n%s\nengine log:\n%s", logs, engineLog)
	}
	exitAfter, exitErr := time.Since(sigAt), waitErr
	t.Logf("streams done %s after SIGTERM, gateway exited after %s (%v)", streamsDone.Round(time.Millisecond), exitAfter.Round(time.Millisecond), exitErr)
	for i, r := range results {
		if r.err != nil || r.sent != r.got || !r.same {
			t.Errorf("stream %d: sent %d bytes, got %d back (same: %v): %v", i, r.sent, r.got, r.same, r.err)
		}
	}
	if exitErr != nil {
		t.Errorf("gateway exit after SIGTERM: %v", exitErr)
	}
	if exitAfter > shutdownGrace+5*time.Second {
		t.Errorf("gateway took %s to exit, over its %s shutdown bound", exitAfter, shutdownGrace)
	}
	if t.Failed() {
		t.Logf("gateway log:\n%s", logs)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		state, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if !strings.Contains(string(state), ") Z ") {
			t.Errorf("engine process %d still running after the gateway exited (%q)", pid, state)
		}
	}
}

// enginePID is the pid the exec start script recorded for engine-0.
func enginePID(t *testing.T, root string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "engine-0", "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
