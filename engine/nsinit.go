package engine

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NSInitCommand is the hidden wakegate subcommand that a Dagger engine runs
// under: 'wakegate engine' re-executes its own binary with it in new mount
// and PID namespaces (and a new network namespace unless NetHost). It is
// not meant to be run by hand.
const NSInitCommand = "engine-ns"

// Dagger's engine insists on these paths (its distconsts), whatever the host
// has: runc and its init at /usr/local/bin, CNI plugins in /opt/cni/bin,
// iptables' multi-call binaries in /usr/bin.
const (
	daggerRunc = "/usr/local/bin/runc"
	daggerInit = "/usr/local/bin/dagger-init"
	daggerCNI  = "/opt/cni/bin"
)

// overlaid are the directories Dagger's engine writes into at every start
// or expects files in: the iptables links in /usr/bin; runc and its init in
// /usr/local/bin, and hash links it makes (c_rehash) in
// /usr/local/share/ca-certificates; a resolv.conf bind mount and
// update-ca-certificates' output in /etc; the CNI plugins in /opt; the CNI
// plugins' IP allocations and result cache in /var/lib/cni. Inside the
// namespace each is an overlay whose upper layer lives in a tmpfs of the
// namespace: nothing written reaches the host.
var overlaid = []string{"/usr/bin", "/usr/local", "/etc", "/opt", "/var/lib"}

// daggerCacheInterval is how often Dagger refreshes the cache size its
// metrics report. Dagger's default is 5 minutes because the refresh holds
// BuildKit's disk-usage lock; a minute keeps /status fresh enough.
const daggerCacheInterval = time.Minute

// nsConfig is what the namespace init needs: where Dagger's binaries are,
// its root, socket and config, a scratch directory for the overlays'
// upper layers, the socket its metrics are served on, and its stop bound.
type nsConfig struct {
	Bin, Root, Socket, Config, Scratch, Metrics string
	Net                                         Net
	StopTimeout                                 time.Duration
}

func (c nsConfig) args() []string {
	return []string{NSInitCommand, "--bin", c.Bin, "--root", c.Root, "--socket", c.Socket, "--config", c.Config,
		"--scratch", c.Scratch, "--metrics", c.Metrics, "--net", string(c.Net), "--stop-timeout", c.StopTimeout.String()}
}

func parseNSArgs(args []string) (nsConfig, error) {
	var c nsConfig
	fs := flag.NewFlagSet(NSInitCommand, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Bin, "bin", "", "")
	fs.StringVar(&c.Root, "root", "", "")
	fs.StringVar(&c.Socket, "socket", "", "")
	fs.StringVar(&c.Config, "config", "", "")
	fs.StringVar(&c.Scratch, "scratch", "", "")
	fs.StringVar(&c.Metrics, "metrics", "", "")
	net := fs.String("net", string(NetPrivate), "")
	fs.DurationVar(&c.StopTimeout, "stop-timeout", time.Minute, "")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%s: %w", NSInitCommand, err)
	}
	var err error
	if c.Net, err = ParseNet(*net); err != nil {
		return c, fmt.Errorf("%s: %w", NSInitCommand, err)
	}
	if c.Bin == "" || c.Root == "" || c.Socket == "" || c.Scratch == "" || c.Metrics == "" || c.StopTimeout <= 0 {
		return c, fmt.Errorf("%s: --bin, --root, --socket, --scratch, --metrics and --stop-timeout are required", NSInitCommand)
	}
	return c, nil
}

// NSInit is the init of a Dagger engine's namespaces, PID 1 of its own PID
// namespace: it makes the mount namespace private, mounts a fresh /proc,
// overlays the directories Dagger writes into, puts a tmpfs on /run, places
// runc, dagger-init, the CNI plugins and the xtables binaries where Dagger
// insists on finding them, brings loopback up in a private network, then
// runs dagger-engine and waits for it. When ctx ends (SIGTERM) it forwards
// exactly one SIGTERM: Dagger counts signals and exits uncleanly at the
// third, and its clean-shutdown marker is written only by a graceful stop.
//
// When NSInit returns its process exits, and the kernel kills whatever is
// left in the PID namespace (Dagger's dnsmasq runs in its own process group
// and would outlive the engine anywhere else); the mount and network
// namespaces go with it. The host keeps its mounts, links, iptables
// binaries and /etc/resolv.conf.
//
// It returns dagger-engine's exit code, or an error if the namespace could
// not be prepared.
func NSInit(ctx context.Context, args []string, log *slog.Logger) (int, error) {
	c, err := parseNSArgs(args)
	if err != nil {
		return 0, err
	}
	if os.Getpid() != 1 {
		return 0, fmt.Errorf("%s runs as the init of a new PID namespace, started by 'wakegate engine --engine dagger'", NSInitCommand)
	}
	if err := prepareNamespace(c); err != nil {
		return 0, fmt.Errorf("%s: prepare namespace: %w", NSInitCommand, err)
	}
	port, err := freePort()
	if err != nil {
		return 0, fmt.Errorf("%s: metrics port: %w", NSInitCommand, err)
	}
	stopMetrics, err := serveMetrics(c.Metrics, port)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", NSInitCommand, err)
	}
	defer stopMetrics()

	if ctx.Err() != nil {
		return 0, nil // stopped before the engine started: nothing to stop
	}
	cmd := exec.Command(filepath.Join(c.Bin, "dagger-engine"), "--root", c.Root, "--addr", "unix://"+c.Socket, "--config", c.Config)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("_EXPERIMENTAL_DAGGER_METRICS_ADDR=127.0.0.1:%d", port),
		"_EXPERIMENTAL_DAGGER_METRICS_CACHE_UPDATE_INTERVAL="+daggerCacheInterval.String())
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("%s: start dagger-engine: %w", NSInitCommand, err)
	}
	log.Info("dagger engine started", "pid", cmd.Process.Pid, "net", string(c.Net))
	exited := make(chan unix.WaitStatus, 1)
	// Not cmd.Wait: as PID 1 this process inherits every orphan of the
	// namespace (dnsmasq, runc's children) and must reap them all. The
	// reaper ends with the process, right after the engine's exit.
	go reap(cmd.Process.Pid, exited)

	var ws unix.WaitStatus
	select {
	case ws = <-exited:
	case <-ctx.Done():
		log.Info("forwarding one SIGTERM to the dagger engine", "stop_timeout", c.StopTimeout.String())
		began := time.Now()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			log.Warn("signal dagger engine", "err", err)
		}
		t := time.NewTimer(c.StopTimeout)
		select {
		case ws = <-exited:
			t.Stop()
		case <-t.C:
			log.Error("dagger engine did not stop in time; killing it", "stop_timeout", c.StopTimeout.String())
			cmd.Process.Signal(syscall.SIGKILL)
			kt := time.NewTimer(10 * time.Second)
			select {
			case ws = <-exited:
				kt.Stop()
			case <-kt.C:
				return 0, fmt.Errorf("%s: dagger engine pid %d still runs after SIGKILL", NSInitCommand, cmd.Process.Pid)
			}
		}
		log.Info("dagger engine stopped", "stop_ms", time.Since(began).Milliseconds())
	}
	switch {
	case ws.Exited():
		return ws.ExitStatus(), nil
	case ws.Signaled():
		return 128 + int(ws.Signal()), nil
	}
	return 1, nil
}

// reap waits for every child of this PID-1 process and sends the status of
// main on exited.
func reap(main int, exited chan<- unix.WaitStatus) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return // no child left
		case pid == main:
			exited <- ws
		}
	}
}

// prepareNamespace sets up the mount and network namespace Dagger's engine
// runs in. Every mount made here is private to the namespace.
func prepareNamespace(c nsConfig) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	// Resolved before /usr/local/bin is overlaid; all are host files that
	// get bind-mounted at Dagger's fixed paths, nothing is copied.
	runc, err := exec.LookPath("runc")
	if err != nil {
		return fmt.Errorf("runc: %w", err)
	}
	if runc, err = filepath.Abs(runc); err != nil {
		return err
	}
	cni := cniPluginDir()
	var plugins []string
	if cni != "" && cni != daggerCNI {
		entries, err := os.ReadDir(cni)
		if err != nil {
			return fmt.Errorf("CNI plugins: %w", err)
		}
		for _, e := range entries {
			if !e.IsDir() {
				plugins = append(plugins, filepath.Join(cni, e.Name()))
			}
		}
	}
	xtables := map[string]string{}
	for _, name := range []string{"xtables-legacy-multi", "xtables-nft-multi"} {
		if src := xtablesSource(name); src != "" && src != filepath.Join("/usr/bin", name) {
			xtables[name] = src
		}
	}
	// A resolv.conf that links into /run (systemd-resolved's) would dangle
	// once /run is a tmpfs: Dagger reads it for its containers' DNS.
	var resolv []byte
	if target, err := os.Readlink("/etc/resolv.conf"); err == nil && strings.HasPrefix(filepath.Clean(filepath.Join("/etc", target)), "/run/") {
		resolv, _ = os.ReadFile("/etc/resolv.conf")
	}
	// What this engine uses that lies under an overlaid directory (the
	// state on /var/lib/wakegate, its cache volume): an overlay would show
	// the directory it covers, not what is mounted there, and writes would
	// land in the tmpfs. Held open now, bound back after the overlays.
	keep, err := holdVisible(c)
	if err != nil {
		return err
	}
	defer keep.close()

	if err := unix.Mount("tmpfs", c.Scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return fmt.Errorf("mount scratch tmpfs on %s: %w", c.Scratch, err)
	}
	for i, dir := range overlaid {
		upper := filepath.Join(c.Scratch, fmt.Sprint(i), "upper")
		work := filepath.Join(c.Scratch, fmt.Sprint(i), "work")
		if err := os.MkdirAll(upper, 0o755); err != nil {
			return err
		}
		if err := os.MkdirAll(work, 0o755); err != nil {
			return err
		}
		opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", dir, upper, work)
		if err := unix.Mount("overlay", dir, "overlay", 0, opts); err != nil {
			return fmt.Errorf("overlay %s: %w", dir, err)
		}
	}
	if err := keep.restore(); err != nil {
		return err
	}
	if resolv != nil {
		if err := os.Remove("/etc/resolv.conf"); err != nil {
			return fmt.Errorf("resolv.conf: %w", err)
		}
		if err := os.WriteFile("/etc/resolv.conf", resolv, 0o644); err != nil {
			return fmt.Errorf("resolv.conf: %w", err)
		}
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on /run: %w", err)
	}
	if runc != daggerRunc {
		if err := bindFile(runc, daggerRunc); err != nil {
			return err
		}
	}
	if err := bindFile(filepath.Join(c.Bin, "dagger-init"), daggerInit); err != nil {
		return err
	}
	if err := os.MkdirAll(daggerCNI, 0o755); err != nil {
		return err
	}
	for _, p := range append(plugins, filepath.Join(c.Bin, "dnsname")) {
		if err := bindFile(p, filepath.Join(daggerCNI, filepath.Base(p))); err != nil {
			return err
		}
	}
	for name, src := range xtables {
		if err := bindFile(src, filepath.Join("/usr/bin", name)); err != nil {
			return err
		}
	}
	if c.Net == NetPrivate {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	return nil
}

// heldPaths are directories kept visible through the overlays: each path
// with an O_PATH descriptor on what it showed before.
type heldPaths struct {
	paths []string
	fds   []int
}

// holdVisible opens the directories of c (the state directory, Dagger's
// binaries, the config's directory) that lie under an overlaid directory,
// outermost first, skipping any inside another.
func holdVisible(c nsConfig) (*heldPaths, error) {
	var dirs []string
	for _, p := range []string{filepath.Dir(c.Socket), filepath.Dir(c.Metrics), c.Root, c.Scratch, c.Bin, filepath.Dir(c.Config)} {
		if p == "" || p == "." {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		dirs = append(dirs, abs)
	}
	slices.Sort(dirs)
	h := &heldPaths{}
	for _, d := range slices.Compact(dirs) {
		if !underOverlay(d) || slices.ContainsFunc(h.paths, func(p string) bool { return strings.HasPrefix(d, p+"/") }) {
			continue
		}
		fd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			h.close()
			return nil, fmt.Errorf("hold %s: %w", d, err)
		}
		h.paths, h.fds = append(h.paths, d), append(h.fds, fd)
	}
	return h, nil
}

func underOverlay(p string) bool {
	return slices.ContainsFunc(overlaid, func(d string) bool { return p == d || strings.HasPrefix(p, d+"/") })
}

// restore binds each held directory (with what is mounted below it) back
// onto its path, now inside an overlay.
func (h *heldPaths) restore() error {
	for i, p := range h.paths {
		src := fmt.Sprintf("/proc/self/fd/%d", h.fds[i])
		if err := unix.Mount(src, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("keep %s visible through its overlay: %w", p, err)
		}
	}
	return nil
}

func (h *heldPaths) close() {
	for _, fd := range h.fds {
		unix.Close(fd)
	}
	h.fds = nil
}

// bindFile makes dst (inside an overlay) show the file src.
func bindFile(src, dst string) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		return fmt.Errorf("place %s: %w", dst, err)
	}
	f.Close()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	return nil
}

// loopbackUp brings lo up, the only link of a new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// cniPluginDir is where this host keeps the standard CNI plugins: Debian's
// containernetworking-plugins in /usr/lib/cni, or /opt/cni/bin.
func cniPluginDir() string {
	for _, d := range []string{"/usr/lib/cni", daggerCNI} {
		if isExecutable(filepath.Join(d, "bridge")) {
			return d
		}
	}
	return ""
}

// xtablesSource finds an iptables multi-call binary: Debian keeps them in
// /usr/sbin, Dagger insists on /usr/bin.
func xtablesSource(name string) string {
	for _, d := range []string{"/usr/bin", "/usr/sbin"} {
		if p := filepath.Join(d, name); isExecutable(p) {
			return p
		}
	}
	return ""
}

// freePort picks a loopback port for Dagger's metrics. In a private network
// namespace nothing else can take it in the meantime.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// serveMetrics serves Dagger's metrics (which it serves only over TCP, in
// this namespace) on a unix socket in the state directory, which 'wakegate
// engine' outside the namespace can reach.
func serveMetrics(sock string, port int) (stop func(), err error) {
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale metrics socket: %w", err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("metrics socket: %w", err)
	}
	target := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport: &http.Transport{ResponseHeaderTimeout: 10 * time.Second, DisableKeepAlives: true},
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", rp)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	return func() {
		srv.Close()
		<-done
		os.Remove(sock)
	}, nil
}
