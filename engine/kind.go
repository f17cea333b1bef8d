package engine

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/wakegate/wakegate/enginecmd"
)

// Kind is what engine a machine runs. Each kind is asked about its work in
// the way it answers: buildkitd through BuildKit's control API, Dagger's
// engine (which implements only Info and ListWorkers of that API) through
// its own metrics and the connections of the front.
type Kind string

const (
	// KindBuildkit is buildkitd, or another engine given by --engine-cmd
	// that speaks BuildKit's control API.
	KindBuildkit Kind = "buildkit"
	// KindDagger is Dagger's engine, run in its own namespaces (NSInit).
	KindDagger Kind = enginecmd.KindDagger
)

// ParseKind reads an --engine value; "" is buildkit.
func ParseKind(s string) (Kind, error) {
	switch Kind(s) {
	case "", KindBuildkit:
		return KindBuildkit, nil
	case KindDagger:
		return KindDagger, nil
	}
	return "", fmt.Errorf("engine kind %q: want buildkit or dagger", s)
}

// Net is the network a Dagger engine runs in.
type Net string

const (
	// NetPrivate gives the engine its own network namespace with only
	// loopback: several engines share a host and none touches its network
	// (Dagger sets up a bridge, iptables rules and dnsmasq at every start).
	// Its containers cannot reach registries.
	NetPrivate Net = "private"
	// NetHost leaves the engine in the machine's network: for a machine that
	// runs nothing else (a Fly machine), where its containers need to pull.
	NetHost Net = "host"
)

// ParseNet reads an --engine-net value; "" is private.
func ParseNet(s string) (Net, error) {
	switch Net(s) {
	case "", NetPrivate:
		return NetPrivate, nil
	case NetHost:
		return NetHost, nil
	}
	return "", fmt.Errorf("engine network %q: want private or host", s)
}

// DaggerFiles are what --engine-bin must hold: the engine, the init it
// bind-mounts into containers, and its CNI plugin.
var DaggerFiles = []string{"dagger-engine", "dagger-init", "dnsname"}

// daggerHowTo says where Dagger's binaries come from.
const daggerHowTo = "build them from github.com/dagger/dagger (cmd/engine, cmd/dagger-init, cmd/dnsname) or copy them from its engine image " +
	"(/usr/local/bin/dagger-engine, /usr/local/bin/dagger-init, /opt/cni/bin/dnsname); in wakegate's repository 'make dagger' unpacks them into bin/dagger"

// CheckDaggerBin says which of DaggerFiles dir lacks, and how to get it.
func CheckDaggerBin(dir string) error {
	if dir == "" {
		return fmt.Errorf("no directory of Dagger's binaries: pass --engine-bin DIR or set $WAKEGATE_DAGGER_BIN (DIR holds %s; %s)", joinFiles(), daggerHowTo)
	}
	var errs []error
	for _, f := range DaggerFiles {
		p := filepath.Join(dir, f)
		switch fi, err := os.Stat(p); {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s is missing from --engine-bin %s (%v): %s", f, dir, err, daggerHowTo))
		case fi.IsDir() || fi.Mode().Perm()&0o111 == 0:
			errs = append(errs, fmt.Errorf("%s in --engine-bin %s is not an executable file", f, dir))
		}
	}
	return errors.Join(errs...)
}

func joinFiles() string {
	return DaggerFiles[0] + ", " + DaggerFiles[1] + " and " + DaggerFiles[2]
}

// CheckDaggerHost says what this machine lacks to run Dagger engines from
// bin, before any socket opens: an engine that cannot start would otherwise
// be found out by the first client, after a wake.
func CheckDaggerHost(bin string) error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("Dagger engines need root (they run containers and their own namespaces): run as root"))
	}
	if err := CheckDaggerBin(bin); err != nil {
		errs = append(errs, err)
	}
	const apt = "apt-get install runc dnsmasq-base iptables containernetworking-plugins, or run 'make deps'"
	if _, err := exec.LookPath("runc"); err != nil && !isExecutable(daggerRunc) {
		errs = append(errs, errors.New("runc not found: "+apt))
	}
	if _, err := exec.LookPath("dnsmasq"); err != nil && !isExecutable("/usr/sbin/dnsmasq") {
		errs = append(errs, errors.New("dnsmasq not found (Dagger's container DNS): "+apt))
	}
	if xtablesSource("xtables-legacy-multi") == "" && xtablesSource("xtables-nft-multi") == "" {
		errs = append(errs, errors.New("neither xtables-legacy-multi nor xtables-nft-multi found in /usr/sbin or /usr/bin: "+apt))
	}
	if cniPluginDir() == "" {
		errs = append(errs, errors.New("no CNI plugins in /usr/lib/cni or /opt/cni/bin: "+apt))
	}
	for _, d := range overlaid {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			errs = append(errs, fmt.Errorf("%s is not a directory: a Dagger engine's namespace overlays it (create it)", d))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("dagger engine: %w", errors.Join(errs...))
	}
	return nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode().Perm()&0o111 != 0
}
