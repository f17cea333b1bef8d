package daggertest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Host is what a Dagger engine would change on its host if it ran there:
// mounts at the paths it touches, the iptables links it rewrites in
// /usr/bin, /etc/resolv.conf (which it bind-mounts over), the network links
// (its dagger0 bridge). Compare one taken before an engine starts with one
// taken after it stops.
type Host struct {
	Mounts   []string          // mountinfo lines at the paths Dagger touches, or under the state directory
	Links    map[string]string // /usr/bin/iptables* and xtables targets ("" absent)
	Resolv   string            // /etc/resolv.conf's content
	NetLinks []string          // links in this (the host's) network namespace
	Files    []string          // what is in the host directories Dagger writes into
}

// written are host directories Dagger's engine writes into at start or
// while it runs: its CNI plugins' IP allocations and result cache, and the
// hash links c_rehash makes next to custom CA certificates.
var written = []string{"/var/lib/cni", "/usr/local/share/ca-certificates", "/opt/cni"}

// touched are the places Dagger's engine mounts over or writes into.
var touched = []string{"/etc", "/usr/bin", "/usr/local/bin", "/opt", "/run", "/var/run", "/proc"}

var linkNames = []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore",
	"xtables-legacy-multi", "xtables-nft-multi"}

// Snapshot records the host as a Dagger engine on state would change it.
func Snapshot(t testing.TB, state string) Host {
	t.Helper()
	h := Host{Links: map[string]string{}}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		if slices.ContainsFunc(touched, func(p string) bool { return mp == p || strings.HasPrefix(mp, p+"/") }) ||
			mp == state || strings.HasPrefix(mp, state+"/") {
			// Without the mount id and parent id, which a remount changes
			// even when nothing else does.
			h.Mounts = append(h.Mounts, strings.Join(fields[2:], " "))
		}
	}
	for _, n := range linkNames {
		p := filepath.Join("/usr/bin", n)
		target, err := os.Readlink(p)
		if err != nil {
			if _, serr := os.Lstat(p); serr == nil {
				target = "(a file)"
			}
		}
		h.Links[n] = target
	}
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	h.Resolv = string(b)
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		h.NetLinks = append(h.NetLinks, e.Name())
	}
	for _, d := range written {
		filepath.WalkDir(d, func(p string, _ os.DirEntry, err error) error {
			if err == nil {
				h.Files = append(h.Files, p)
			}
			return nil
		})
	}
	return h
}

// Diff lists what changed from h to now.
func (h Host) Diff(now Host) []string {
	var d []string
	for _, m := range now.Mounts {
		if !slices.Contains(h.Mounts, m) {
			d = append(d, "new mount: "+m)
		}
	}
	for _, m := range h.Mounts {
		if !slices.Contains(now.Mounts, m) {
			d = append(d, "mount gone: "+m)
		}
	}
	for _, n := range linkNames {
		if h.Links[n] != now.Links[n] {
			d = append(d, fmt.Sprintf("/usr/bin/%s: %q, was %q", n, now.Links[n], h.Links[n]))
		}
	}
	if h.Resolv != now.Resolv {
		d = append(d, fmt.Sprintf("/etc/resolv.conf changed:\n%s\nwas:\n%s", now.Resolv, h.Resolv))
	}
	for _, l := range now.NetLinks {
		if !slices.Contains(h.NetLinks, l) {
			d = append(d, "new network link: "+l)
		}
	}
	for _, f := range now.Files {
		if !slices.Contains(h.Files, f) {
			d = append(d, "new file: "+f)
		}
	}
	return d
}

// Namespaces are the namespace ids (readlink of /proc/PID/ns/*) of a
// running Dagger engine's namespace init.
type Namespaces struct{ PID, Mnt, Net string }

// FindEngine waits up to timeout for the namespace init of the Dagger
// engine on state, and returns its pid and namespaces.
func FindEngine(t testing.TB, state string, timeout time.Duration) (int, Namespaces) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, pid := range pids() {
			args := cmdline(pid)
			if len(args) > 1 && args[1] == "engine-ns" && slices.Contains(args, filepath.Join(state, "root")) {
				ns := Namespaces{PID: nsOf(pid, "pid"), Mnt: nsOf(pid, "mnt"), Net: nsOf(pid, "net")}
				if ns.PID != "" && ns.PID != nsOf(os.Getpid(), "pid") {
					return pid, ns
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Dagger namespace init for %s after %s", state, timeout)
		}
		time.Sleep(20 * time.Millisecond) // polling /proc with a deadline
	}
}

// Leftovers lists the processes still running in any of ns, or naming
// state on their command line (dnsmasq, runc, dagger-engine, the
// namespace init).
func Leftovers(state string, ns Namespaces) []string {
	var left []string
	self := strconv.Itoa(os.Getpid())
	for _, pid := range pids() {
		if strconv.Itoa(pid) == self {
			continue
		}
		args := cmdline(pid)
		in := func(kind, id string) bool { return id != "" && nsOf(pid, kind) == id }
		if in("pid", ns.PID) || in("mnt", ns.Mnt) || in("net", ns.Net) || slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, state) }) {
			left = append(left, fmt.Sprintf("pid %d: %s", pid, strings.Join(args, " ")))
		}
	}
	return left
}

// WaitNoLeftovers waits up to timeout for Leftovers to be empty.
func WaitNoLeftovers(t testing.TB, state string, ns Namespaces, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := Leftovers(state, ns)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left on the host %s after the engine stopped:\n%s", timeout, strings.Join(left, "\n"))
		}
		time.Sleep(50 * time.Millisecond) // polling /proc with a deadline
	}
}

func pids() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func nsOf(pid int, kind string) string {
	s, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	return s
}
