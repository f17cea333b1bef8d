// Command benchpeers is 'make bench-peers': it measures, in one run on this
// machine and over loopback only, four paths to the echo backend —
//
//	raw:            client ──tcp──▶ echo
//	peers:          client ──tcp──▶ stunnel ──mTLS──▶ haproxy ──unix──▶ echo
//	wakegate:       client ──tcp──▶ connect ──mTLS──▶ gateway ──mTLS──▶ engine ──unix──▶ echo
//	wakegate-local: client ──tcp──▶ connect ──mTLS──▶ gateway ──unix──▶ engine ──unix──▶ echo
//
// — and, for new connections, two floors beside them: two plain relays in
// a row with no TLS (floor.go).
//
// The echo backend (./echo) is what 'wakegate engine --engine-cmd' runs in
// place of buildkitd (it answers ListWorkers for readiness); haproxy reaches
// the same process on its socket, the raw path on its TCP port. The
// wakegate gateway runs with the exec provider (a remote engine's path);
// the wakegate-local one with the local provider, whose engine it reaches
// on the engine's unix front, in front of a second echo process of the
// same binary. The real binaries throughout.
//
// It prints each figure with its ratio to the peer pair and to raw, checks
// the performance targets, and writes the report to -out.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wakegate/wakegate/certs"
)

func main() {
	if spec := os.Getenv(relayEnv); spec != "" {
		if err := relayMain(spec); err != nil {
			fmt.Fprintln(os.Stderr, "bench-peers relay:", err)
			os.Exit(1)
		}
		return
	}
	err := run(os.Args[1:])
	var usage errUsage
	switch {
	case errors.As(err, &usage) && usage.help:
	case errors.As(err, &usage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench-peers:", err)
		os.Exit(1)
	}
}

// errUsage is bad flags (or -h), which the flag set has already printed
// with the usage.
type errUsage struct{ help bool }

func (e errUsage) Error() string { return "usage" }

type options struct {
	bin, echo, out   string
	conns, conns16   int
	paced            int           // paced new connections per path and round
	rounds           int           // paced and bulk measurements, the paths taking turns
	sched            int           // paced new connections per path under perf sched record
	gap              time.Duration // between paced new connections
	bulk             time.Duration
	idle             []int
	cold             int
	stunnel, haproxy string
	fdLimit          uint64
	keep             bool // keep the work directory (logs) after a run that succeeded
}

// parseFlags reads the tool's flags from args. Bad flags and -h give an
// errUsage, the flag set having printed the usage already.
func parseFlags(args []string) (options, error) {
	var o options
	idle := "1000,10000"
	// A flag set of its own: the default one also holds the flags that
	// imported packages register (glog's), which are not this tool's.
	fs := flag.NewFlagSet("bench-peers", flag.ContinueOnError)
	fs.StringVar(&o.bin, "wakegate", "bin/wakegate", "the wakegate binary")
	fs.StringVar(&o.echo, "echo", "", "the echo backend binary (cmd/wakegate/testdata/echoengine)")
	fs.StringVar(&o.out, "out", "bench/latest.txt", "where the report goes")
	fs.IntVar(&o.conns, "conns", 400, "new connections measured one at a time, per path")
	fs.IntVar(&o.conns16, "conns16", 1600, "new connections measured 16 at a time, per path")
	fs.IntVar(&o.paced, "paced", 200, "new connections measured one at a time with -gap between them, per path and round (latency as a CI job sees it)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of the paced and bulk measurements; in each, every path takes its turn, so that other work on the machine falls on all paths alike")
	fs.IntVar(&o.sched, "sched", 50, "paced new connections per path measured again under 'perf sched record' (Debian's linux-perf), for what they wait on; 0: none")
	fs.DurationVar(&o.gap, "gap", 10*time.Millisecond, "pause between paced new connections")
	fs.DurationVar(&o.bulk, "bulk", 3*time.Second, "bulk echo time per path and round")
	fs.StringVar(&idle, "idle", idle, "idle tunnelled connections held, comma-separated counts")
	fs.IntVar(&o.cold, "cold", 8, "cold connects (engine stopped) measured")
	fs.StringVar(&o.stunnel, "stunnel", "stunnel4", "stunnel binary")
	fs.StringVar(&o.haproxy, "haproxy", "haproxy", "haproxy binary")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (every process's log) after a run that succeeded, and print its path")
	if err := fs.Parse(args); err != nil {
		return o, errUsage{help: errors.Is(err, flag.ErrHelp)} // the flag set said what
	}
	for _, s := range strings.Split(idle, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return o, fmt.Errorf("-idle %q: want positive counts", idle)
		}
		o.idle = append(o.idle, n)
	}
	if o.echo == "" {
		return o, errors.New("-echo is required")
	}
	switch {
	case o.rounds < 1:
		return o, fmt.Errorf("-rounds %d: want at least 1 (the paced and bulk figures are measured in rounds)", o.rounds)
	case o.paced < 1:
		return o, fmt.Errorf("-paced %d: want at least 1 (the new-connection target is judged on paced connections)", o.paced)
	case o.bulk <= 0:
		return o, fmt.Errorf("-bulk %s: want a positive time, such as 3s", o.bulk)
	}
	return o, nil
}

func run(args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	// A process on the path holds up to three descriptors per tunnelled
	// connection (a local engine's gateway: the client's, the engine
	// socket handed over and the front connection that leases it): ask
	// for no more than the limit allows.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	o.fdLimit = lim.Cur
	for i, n := range o.idle {
		if most := (int(lim.Cur) - 500) / 3; n > most {
			fmt.Fprintf(os.Stderr, "bench-peers: %d idle connections asked, %d held: the open-files limit is %d (raise it with ulimit -n as root)\n", n, most, lim.Cur)
			o.idle[i] = most
		}
	}
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		return err
	}
	if o.echo, err = filepath.Abs(o.echo); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "wg-bench-")
	if err != nil {
		return err
	}
	b := &bench{opt: o, work: work}
	rep, err := b.measure()
	b.stopAll()
	if err != nil {
		return fmt.Errorf("%w (logs in %s)", err, work)
	}
	if b.keepWork || o.keep {
		fmt.Fprintln(os.Stderr, "bench-peers: logs kept in", work)
	} else {
		os.RemoveAll(work)
	}
	text := rep.String()
	fmt.Print(text)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(o.out, []byte(text), 0o644)
}

// bench owns the processes it starts and stops them, by pid, at the end.
type bench struct {
	opt   options
	work  string
	mu    sync.Mutex // guards procs
	procs []*exec.Cmd
	roots []string // exec roots whose engines to stop
	// keepWork keeps the work directory (its logs) after a run that
	// succeeded in part.
	keepWork bool
}

func (b *bench) start(name string, env []string, args ...string) (*exec.Cmd, error) {
	log, err := os.Create(filepath.Join(b.work, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	log.Close()
	b.mu.Lock()
	b.procs = append(b.procs, cmd)
	b.mu.Unlock()
	return cmd, nil
}

// stopAll sends SIGTERM to what it started, newest first, and waits (the
// gateway stops its engines through the exec provider); engines still
// running after that are sent SIGKILL by their recorded pid.
func (b *bench) stopAll() {
	b.mu.Lock()
	procs := b.procs
	b.procs = nil
	b.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
	for _, root := range b.roots {
		if pid, err := readPid(filepath.Join(root, "engine-0", "pid")); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func readPid(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// freePort reserves a loopback port for a process to listen on.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitListening waits until addr accepts connections.
func waitListening(addr string, within time.Duration) error {
	give := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(give) {
			return fmt.Errorf("%s not listening after %s: %w", addr, within, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a process we started, bounded
	}
}

// deployment is one gateway with its connect sidecar.
type deployment struct {
	root            string // WAKEGATE_EXEC_ROOT
	gateway, admin  string
	connect         string
	gwCmd, connCmd  *exec.Cmd
	engineDir       string
	gwLog           string // the gateway's log (JSON)
	echoSock, echoT string // the echo backend's socket and TCP address
}

// deploy runs a gateway with the exec provider and its connect sidecar;
// gwLog is the gateway's --log-level (debug for the cold connects, whose
// measurement reads its log).
func (b *bench) deploy(name, caDir, creds, idle, gwLog string) (*deployment, error) {
	d := &deployment{root: filepath.Join(b.work, name)}
	d.engineDir = filepath.Join(d.root, "engine-0")
	if err := os.MkdirAll(d.root, 0o755); err != nil {
		return nil, err
	}
	b.roots = append(b.roots, d.root)
	var err error
	if d.echoT, err = freePort(); err != nil {
		return nil, err
	}
	// start.sh notes when each start begins: the engine's own
	// start-to-ready is measured from there to its "engine ready" line.
	start := filepath.Join(d.root, "start.sh")
	script := `set -eu
dir="$WAKEGATE_EXEC_ROOT/$WAKEGATE_ENGINE"
mkdir -p "$dir"
date +%s%N >"$dir/start.ns"
rm -f "$dir/engine.addr"
"$WAKEGATE_BIN" engine --state "$dir" --listen 127.0.0.1:0 --addr-file "$dir/engine.addr" \
  --name "wakegate-$WAKEGATE_ENGINE" --log-format json --engine-cmd "` + b.opt.echo + ` {socket} ` + d.echoT + `" >>"$dir/engine.log" 2>&1 &
echo $! >"$dir/pid"
while [ ! -s "$dir/engine.addr" ]; do sleep 0.005; done
cat "$dir/engine.addr"
`
	stop := filepath.Join(d.root, "stop.sh")
	stopScript := `set -eu
dir="$WAKEGATE_EXEC_ROOT/$WAKEGATE_ENGINE"
[ -s "$dir/pid" ] || exit 0
pid=$(cat "$dir/pid")
kill -TERM "$pid" 2>/dev/null || { rm -f "$dir/pid"; exit 0; }
while state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) && [ "$state" != Z ]; do sleep 0.02; done
rm -f "$dir/pid"
`
	for path, text := range map[string]string{start: script, stop: stopScript} {
		if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
			return nil, err
		}
	}
	if d.gateway, err = freePort(); err != nil {
		return nil, err
	}
	if d.admin, err = freePort(); err != nil {
		return nil, err
	}
	if d.connect, err = freePort(); err != nil {
		return nil, err
	}
	env := []string{"WAKEGATE_CA_PASSWORD=", "WAKEGATE_EXEC_ROOT=" + d.root, "WAKEGATE_BIN=" + b.opt.bin}
	if d.gwCmd, err = b.start(name+"-gateway", env, b.opt.bin, "gateway", "--ca-dir", caDir,
		"--provider", "exec", "--exec-start", "sh "+start, "--exec-stop", "sh "+stop,
		"--listen", d.gateway, "--admin", d.admin, "--ca-listen", "127.0.0.1:0",
		"--idle", idle, "--max-conns-per-identity", "50000", "--log-level", gwLog, "--log-format", "json"); err != nil {
		return nil, err
	}
	d.gwLog = filepath.Join(b.work, name+"-gateway.log")
	if err := waitListening(d.gateway, 30*time.Second); err != nil {
		return nil, err
	}
	if d.connCmd, err = b.start(name+"-connect", nil, b.opt.bin, "connect", "--gateway", d.gateway,
		"--creds", creds, "--listen", d.connect, "--log-level", "warn"); err != nil {
		return nil, err
	}
	return d, waitListening(d.connect, 30*time.Second)
}

func (d *deployment) enginePid() (int, error) { return readPid(filepath.Join(d.engineDir, "pid")) }

// echoPid finds the echo backend: the engine's child.
func (d *deployment) echoPid() (int, error) {
	epid, err := d.enginePid()
	if err != nil {
		return 0, err
	}
	return childOf(epid)
}

// engineState asks the gateway's admin endpoint for engine-0's state.
func (d *deployment) engineState() (string, error) {
	resp, err := http.Get("http://" + d.admin + "/engines")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var engines []struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &engines); err != nil {
		return "", fmt.Errorf("admin /engines: %w (%s)", err, body)
	}
	if len(engines) == 0 {
		return "", errors.New("admin /engines: none")
	}
	return engines[0].State, nil
}

func (b *bench) measure() (*report, error) {
	o := b.opt
	rep := &report{opt: o, started: time.Now()}
	// Certificates from the CLI (client) and the CA package (haproxy's
	// server certificate, which 'certs issue' does not make).
	caDir, creds := filepath.Join(b.work, "ca"), filepath.Join(b.work, "creds")
	for _, args := range [][]string{
		{"certs", "init", "--ca-dir", caDir, "--no-password"},
		{"certs", "issue", "--ca-dir", caDir, "--identity", "bench", "--cert-ttl", "2h", "--out", creds},
	} {
		if out, err := exec.Command(o.bin, args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("wakegate %s: %v\n%s", strings.Join(args[:2], " "), err, out)
		}
	}
	// A second gateway (the cold one) cannot open the first one's CA
	// database: it gets a copy of the same CA.
	coldCA := filepath.Join(b.work, "ca-cold")
	if out, err := exec.Command("cp", "-a", caDir, coldCA).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy the CA: %v\n%s", err, out)
	}
	ca, err := certs.Load(caDir, nil)
	if err != nil {
		return nil, err
	}
	srvLeaf, err := ca.Issue(certs.Server, "localhost", []string{"localhost", "127.0.0.1"}, 2*time.Hour)
	if err != nil {
		return nil, err
	}
	srvDir := filepath.Join(b.work, "server")
	if err := ca.WriteClientCreds(srvDir, srvLeaf); err != nil {
		return nil, err
	}

	d, err := b.deploy("warm", caDir, creds, "10m", "warn")
	if err != nil {
		return nil, err
	}
	// The first connection wakes the engine, which starts the echo backend.
	if _, err := newConns(d.connect, 1, 1, 0); err != nil {
		return nil, fmt.Errorf("first connection through wakegate: %w", err)
	}
	paths := map[string]*pathInfo{
		"wakegate": {addr: d.connect},
		"raw":      {addr: d.echoT},
	}
	echoPid, err := d.echoPid()
	if err != nil {
		return nil, err
	}
	enginePid, _ := d.enginePid()
	paths["raw"].procs = []proc{{"echo", echoPid}}
	paths["wakegate"].procs = []proc{{"connect", d.connCmd.Process.Pid}, {"gateway", d.gwCmd.Process.Pid}, {"engine", enginePid}, {"echo", echoPid}}
	peer, err := b.startPeers(filepath.Join(d.engineDir, "buildkitd.sock"), creds, srvDir)
	if err != nil {
		return nil, err
	}
	peer.procs = append(peer.procs, proc{"echo", echoPid})
	paths["peers"] = peer
	floors, err := b.startFloors(filepath.Join(d.engineDir, "buildkitd.sock"))
	if err != nil {
		return nil, err
	}
	maps.Copy(paths, floors) // paced only: no process's CPU is read

	local, err := b.deployLocal("local", caDir, creds)
	if err != nil {
		return nil, err
	}
	if _, err := newConns(local.connect, 1, 1, 0); err != nil {
		return nil, fmt.Errorf("first connection through wakegate with a local engine: %w", err)
	}
	localEngine, localEcho, err := local.localPids()
	if err != nil {
		return nil, err
	}
	paths["wakegate-local"] = &pathInfo{addr: local.connect, procs: []proc{{"connect", local.connCmd.Process.Pid},
		{"gateway", local.gwCmd.Process.Pid}, {"engine", localEngine}, {"echo", localEcho}}}
	rep.paths = paths

	// Idle memory first, on processes that have served one connection.
	for _, x := range []struct {
		path string
		d    *deployment
	}{{"wakegate", d}, {"wakegate-local", local}} {
		set := idleSet{path: x.path, procs: []proc{{"gateway", x.d.gwCmd.Process.Pid}, {"connect", x.d.connCmd.Process.Pid}}}
		if set.stats, err = b.idle(set.procs, x.d.connect, "http://"+x.d.admin+"/metrics"); err != nil {
			return nil, fmt.Errorf("%s: idle connections: %w", x.path, err)
		}
		rep.idle = append(rep.idle, set)
	}
	// The targets' figures (paced new connections, bulk) in rounds, the
	// paths taking turns: a machine shared with other work drifts over a
	// run, and measured one path after another that drift would fall on
	// one path's figures only.
	paced := func(name string, round int) error {
		p := paths[name]
		c, err := newConns(p.addr, o.paced, 1, o.gap)
		if err != nil {
			return fmt.Errorf("%s: paced new connections (round %d): %w", name, round+1, err)
		}
		p.pacedRounds = append(p.pacedRounds, c)
		return nil
	}
	for round := range o.rounds {
		for _, name := range pathOrder {
			if err := paced(name, round); err != nil {
				return nil, err
			}
			p := paths[name]
			bk, err := bulk(p.addr, o.bulk, p.procs)
			if err != nil {
				return nil, fmt.Errorf("%s: bulk (round %d): %w", name, round+1, err)
			}
			p.bulkRounds = append(p.bulkRounds, bk)
		}
		for _, name := range floorOrder {
			if err := paced(name, round); err != nil {
				return nil, err
			}
		}
	}
	for _, name := range floorOrder {
		paths[name].paced = pooledConns(paths[name].pacedRounds)
	}
	for _, name := range pathOrder {
		p := paths[name]
		p.paced, p.bulk = pooledConns(p.pacedRounds), pooledBulk(p.bulkRounds)
		if p.c1, err = newConns(p.addr, o.conns, 1, 0); err != nil {
			return nil, fmt.Errorf("%s: new connections: %w", name, err)
		}
		if p.c16, err = newConns(p.addr, o.conns16, 16, 0); err != nil {
			return nil, fmt.Errorf("%s: new connections, 16 at a time: %w", name, err)
		}
	}
	if o.sched > 0 {
		for _, name := range pathOrder {
			p := paths[name]
			if p.sched, err = b.schedProfile(name, p, o.sched, o.gap); err != nil {
				// The rest of the run stands: the report says why this
				// section is missing.
				rep.schedErr = fmt.Errorf("%s: paced new connections under perf: %w", name, err)
				fmt.Fprintln(os.Stderr, "bench-peers:", rep.schedErr)
				b.keepWork = true
				break
			}
		}
	}
	if o.cold > 0 {
		cold, err := b.deploy("cold", coldCA, creds, "1s", "debug")
		if err != nil {
			return nil, err
		}
		if rep.cold, err = b.coldConnects(cold, o.cold); err != nil {
			return nil, fmt.Errorf("cold connects: %w", err)
		}
	}
	rep.took = time.Since(rep.started)
	return rep, nil
}

var pathOrder = []string{"raw", "peers", "wakegate", "wakegate-local"}

// pacedOrder is the paced table's: the paths, then the floors (floor.go).
var pacedOrder = slices.Concat(pathOrder, floorOrder)

// wakegatePaths are the paths compared with the peer pair.
var wakegatePaths = []string{"wakegate", "wakegate-local"}

type proc struct {
	name string
	pid  int
}

type pathInfo struct {
	addr  string
	procs []proc
	paced connStats // one at a time with a gap: latency, not throughput; all rounds pooled
	c1    connStats
	c16   connStats
	bulk  bulkStats // all rounds pooled
	// pacedRounds and bulkRounds are each round's own figures.
	pacedRounds []connStats
	bulkRounds  []bulkStats
	sched       schedStats // -sched: what paced new connections wait on
}

// startPeers runs the classic pair: stunnel in client mode presenting the
// client certificate, haproxy terminating TLS 1.3 with client certificates
// required and verified, forwarding to the echo backend's socket.
func (b *bench) startPeers(echoSock, creds, srvDir string) (*pathInfo, error) {
	stAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	haAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	pem := filepath.Join(b.work, "haproxy.pem")
	crt, err := os.ReadFile(filepath.Join(srvDir, certs.ClientCertFile))
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(filepath.Join(srvDir, certs.ClientKeyFile))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(pem, append(crt, key...), 0o600); err != nil {
		return nil, err
	}
	ha := filepath.Join(b.work, "haproxy.cfg")
	haCfg := fmt.Sprintf(`global
  maxconn %d
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend fe
  bind %s ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3
  default_backend be
backend be
  server echo unix@%s
`, b.opt.fdLimit/2-100, haAddr, pem, filepath.Join(creds, certs.CACertFile), echoSock)
	st := filepath.Join(b.work, "stunnel.conf")
	stCfg := fmt.Sprintf(`foreground = yes
pid =
debug = 4
[bench]
client = yes
accept = %s
connect = %s
cert = %s
key = %s
CAfile = %s
verifyChain = yes
checkHost = localhost
sslVersionMin = TLSv1.3
`, stAddr, haAddr, filepath.Join(creds, certs.ClientCertFile), filepath.Join(creds, certs.ClientKeyFile), filepath.Join(creds, certs.CACertFile))
	if err := os.WriteFile(ha, []byte(haCfg), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(st, []byte(stCfg), 0o600); err != nil {
		return nil, err
	}
	haCmd, err := b.start("haproxy", nil, b.opt.haproxy, "-db", "-f", ha)
	if err != nil {
		return nil, err
	}
	if err := waitListening(haAddr, 10*time.Second); err != nil {
		return nil, err
	}
	stCmd, err := b.start("stunnel", nil, b.opt.stunnel, st)
	if err != nil {
		return nil, err
	}
	if err := waitListening(stAddr, 10*time.Second); err != nil {
		return nil, err
	}
	p := &pathInfo{addr: stAddr, procs: []proc{{"stunnel", stCmd.Process.Pid}, {"haproxy", haCmd.Process.Pid}}}
	if _, err := newConns(stAddr, 1, 1, 0); err != nil {
		return nil, fmt.Errorf("first connection through stunnel and haproxy: %w (see %s)", err, b.work)
	}
	return p, nil
}

type connStats struct {
	n          int
	lat        []time.Duration
	elapsed    time.Duration
	p50, p99   time.Duration
	perSecond  float64
	concurrent int
}

// newConns opens n connections, conc at a time; each sends 32 bytes,
// reads their echo and closes. Its latency runs from the dial to the echo.
// newConns opens n connections through addr, conc at a time, each worker
// pausing gap between its connections (0: back to back), and times each.
// echoOnce dials addr, has 32 bytes echoed, and closes.
func echoOnce(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var msg, got [32]byte
	copy(msg[:], bytes.Repeat([]byte("x"), 32))
	if _, err := c.Write(msg[:]); err != nil {
		return err
	}
	_, err = io.ReadFull(c, got[:])
	return err
}

func newConns(addr string, n, conc int, gap time.Duration) (connStats, error) {
	s := connStats{n: n, concurrent: conc, lat: make([]time.Duration, n)}
	var next int
	var mu sync.Mutex // guards next and firstErr
	var firstErr error
	var wg sync.WaitGroup
	began := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := i >= n || firstErr != nil
				mu.Unlock()
				if stop {
					return
				}
				if gap > 0 && i > 0 {
					// The workload's pacing, not a synchronisation.
					time.Sleep(gap)
				}
				t0 := time.Now()
				err := echoOnce(addr)
				s.lat[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	s.elapsed = time.Since(began)
	if firstErr != nil {
		return s, firstErr
	}
	s.p50, s.p99 = percentile(s.lat, 50), percentile(s.lat, 99)
	s.perSecond = float64(n) / s.elapsed.Seconds()
	return s, nil
}

type bulkStats struct {
	bytes   int64
	elapsed time.Duration
	mbps    float64
	cpu     map[string]time.Duration
}

// bulk sends for d on one connection while reading the echo back, and
// takes each process's CPU time around it.
func bulk(addr string, d time.Duration, procs []proc) (bulkStats, error) {
	s := bulkStats{cpu: map[string]time.Duration{}}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return s, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d + time.Minute))
	before := map[string]time.Duration{}
	for _, p := range procs {
		if before[p.name], err = cpuOf(p.pid); err != nil {
			return s, err
		}
	}
	began := time.Now()
	werr := make(chan error, 1)
	go func() {
		buf := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
		for time.Since(began) < d {
			if _, err := c.Write(buf); err != nil {
				werr <- err
				return
			}
		}
		werr <- c.(*net.TCPConn).CloseWrite()
	}()
	n, rerr := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, make([]byte, 64<<10))
	s.elapsed = time.Since(began)
	if err := <-werr; err != nil {
		return s, err
	}
	if rerr != nil {
		return s, rerr
	}
	for _, p := range procs {
		after, err := cpuOf(p.pid)
		if err != nil {
			return s, err
		}
		s.cpu[p.name] = after - before[p.name]
	}
	s.bytes = n
	s.mbps = float64(n) / 1e6 / s.elapsed.Seconds()
	return s, nil
}

func cpuOf(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return procCPU(data)
}

func rssOf(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return procRSS(data)
}

// idleReadings is how many RSS readings, a second apart, each idle point
// takes the lowest of: enough for a trim that waits out memtrim's 5 s
// interval from the previous point's.
const idleReadings = 8

type idleStats struct {
	conns int
	per   map[string]int64 // RSS growth per connection, by process
	// gatewayMem is the growth of the gateway's Go heap and stacks per
	// connection, from its metrics.
	gatewayMem goMem
}

// idleSet is one path's idle measurements, of procs.
type idleSet struct {
	path  string
	procs []proc
	stats []idleStats
}

// idle holds connections open through a wakegate path at addr, each
// tunnelled to the echo backend (one byte echoed), and reads the RSS of
// procs once they settle. It closes them before it returns.
func (b *bench) idle(procs []proc, addr, gatewayMetrics string) ([]idleStats, error) {
	var out []idleStats
	base := map[string]int64{}
	for _, p := range procs {
		v, err := rssOf(p.pid)
		if err != nil {
			return nil, err
		}
		base[p.name] = v
	}
	memBase, err := goMemOf(gatewayMetrics)
	if err != nil {
		return nil, err
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for _, target := range b.opt.idle {
		var mu sync.Mutex // guards held and firstErr
		var firstErr error
		var wg sync.WaitGroup
		todo := make(chan struct{}, target)
		for range target - len(held) {
			todo <- struct{}{}
		}
		close(todo)
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				one := []byte{1}
				for range todo {
					c, err := net.DialTimeout("tcp", addr, 10*time.Second)
					if err == nil {
						c.SetDeadline(time.Now().Add(60 * time.Second))
						if _, err = c.Write(one); err == nil {
							_, err = io.ReadFull(c, one)
						}
						c.SetDeadline(time.Time{})
					}
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = err
					}
					if c != nil {
						held = append(held, c)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return nil, fmt.Errorf("at %d connections: %w", len(held), firstErr)
		}
		// Let the processes settle (their GC, the scavenger, and the
		// trim after a burst, which waits for the burst to end and for 5 s
		// since the last one: internal/memtrim), then take the lowest of
		// idleReadings readings.
		s := idleStats{conns: len(held), per: map[string]int64{}}
		low := map[string]int64{}
		for range idleReadings {
			time.Sleep(time.Second) // settling the measured processes
			for _, p := range procs {
				v, err := rssOf(p.pid)
				if err != nil {
					return nil, err
				}
				if l, ok := low[p.name]; !ok || v < l {
					low[p.name] = v
				}
			}
		}
		for _, p := range procs {
			s.per[p.name] = perConn(base[p.name], low[p.name], s.conns)
		}
		// What the gateway's runtime says it holds, after the readings
		// (the trim has run): the RSS split into heap and stacks.
		mem, err := goMemOf(gatewayMetrics)
		if err != nil {
			return nil, err
		}
		s.gatewayMem = mem.perConn(memBase, s.conns)
		out = append(out, s)
	}
	return out, nil
}

type coldStats struct {
	total []time.Duration
	// before: the client's dial to the gateway's spawn of its start command
	// (connect, the handshake, the wake's decision, the token); spawn: the
	// spawn itself (os/exec's Start of the host's command: the kernel
	// making its process, the host's as a Fly API call's time would be);
	// host: the spawn's end to the engine's "engine ready" (the start
	// command's own start-up — a VM's boot elsewhere — and the engine's);
	// after: ready to the echo's first byte at the client (the probe's
	// answer, the stream, the first byte). The gateway's part is before +
	// after; withSpawn adds the spawn, as sessions 6 to 11 counted it.
	before, spawn, host, after, gateway, withSpawn []time.Duration
}

// coldConnects measures connections that find the engine stopped, cut at
// two moments from the logs (JSON, to the nanosecond): the gateway's
// "exec provider command started" for the start (less its spawn_us for
// the spawn's beginning), and the engine's "engine ready".
func (b *bench) coldConnects(d *deployment, n int) (coldStats, error) {
	var s coldStats
	for i := range n {
		if err := waitStopped(d, 60*time.Second); err != nil {
			return s, err
		}
		began := time.Now()
		st, err := newConns(d.connect, 1, 1, 0)
		if err != nil {
			return s, err
		}
		total := st.lat[0]
		gwLog, err := os.ReadFile(d.gwLog)
		if err != nil {
			return s, err
		}
		spawned, rec, ok := lastLogRecord(gwLog, "exec provider command started", "kind=start")
		if !ok || spawned.Before(began) {
			return s, fmt.Errorf("cold connect %d: no start command in the gateway's log since the dial", i)
		}
		us, ok := rec["spawn_us"].(float64)
		if !ok {
			return s, fmt.Errorf("cold connect %d: the gateway's start line has no spawn_us", i)
		}
		spawn := time.Duration(us) * time.Microsecond
		engLog, err := os.ReadFile(filepath.Join(d.engineDir, "engine.log"))
		if err != nil {
			return s, err
		}
		ready, ok := lastLogTime(engLog, "engine ready", "")
		if !ok || ready.Before(spawned) {
			return s, fmt.Errorf("cold connect %d: no 'engine ready' in the engine's log since the start", i)
		}
		before, host := spawned.Sub(began)-spawn, ready.Sub(spawned)
		after := total - before - spawn - host
		s.total = append(s.total, total)
		s.before = append(s.before, before)
		s.spawn = append(s.spawn, spawn)
		s.host = append(s.host, host)
		s.after = append(s.after, after)
		s.gateway = append(s.gateway, before+after)
		s.withSpawn = append(s.withSpawn, before+spawn+after)
	}
	return s, nil
}

// waitStopped waits until the gateway reports its engine stopped (idle
// after 1 s) and the stop command has finished.
func waitStopped(d *deployment, within time.Duration) error {
	give := time.Now().Add(within)
	for {
		state, err := d.engineState()
		_, perr := os.Stat(filepath.Join(d.engineDir, "pid"))
		if err == nil && state == "stopped" && errors.Is(perr, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(give) {
			return fmt.Errorf("engine not stopped after %s (state %q, %v)", within, state, err)
		}
		time.Sleep(50 * time.Millisecond) // polling the gateway we started, bounded
	}
}

// goMemOf reads a wakegate process's Go memory from its metrics endpoint.
func goMemOf(url string) (goMem, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return goMem{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return goMem{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return goMem{}, fmt.Errorf("%s: %s", url, resp.Status)
	}
	m, err := parseGoMem(body)
	if err != nil {
		return m, fmt.Errorf("%s: %w", url, err)
	}
	return m, nil
}
