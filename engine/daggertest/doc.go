// Package daggertest gives wakegate's tests what running a real Dagger
// engine needs: the binaries 'make dagger' unpacks into bin/dagger, a host
// that can run them (root, runc, dnsmasq, iptables, CNI plugins), the
// dagger CLI with everything that would reach the network turned off, a
// busybox-static rootfs for containers (no image can be pulled), and
// snapshots of the host to prove an engine left nothing behind. A missing
// piece fails the test with the command that fixes it; nothing is skipped.
//
// Only tests import it. It must not import cmd.
package daggertest
