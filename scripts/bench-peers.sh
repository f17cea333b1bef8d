#!/bin/sh
# make bench-peers: wakegate's connect → gateway → engine path measured side
# by side with the classic mTLS sidecar pair (stunnel in client mode →
# haproxy verifying client certificates) and raw loopback TCP, one echo
# backend behind them all, in one run; and wakegate with a local engine,
# which the gateway reaches on the engine's unix front (a second echo
# process of the same binary behind it); beside them, for new connections,
# two floors: two plain relays with no TLS (Go, and haproxy in mode tcp)
# in front of the same echo. Writes bench/latest.txt, which
# docs/performance.md quotes. Loopback only; a few minutes at most.
# Extra arguments go to the measuring tool (scripts/benchpeers), e.g.
#   scripts/bench-peers.sh -idle 1000 -cold 4
#   scripts/bench-peers.sh -sched 0     # without perf's section
set -eu
cd "$(dirname "$0")/.."

# Debian's stunnel4 and haproxy, runc (the local provider will not start
# without it, though the echo engine never calls it), and linux-perf (perf
# sched record: what a new connection waits on), when missing (as root,
# with apt-get). Not root,
# the run goes on without perf, if it is only perf that is missing (its
# section then says why); perf records every CPU, which needs root anyway.
missing=""
command -v stunnel4 >/dev/null 2>&1 || missing="$missing stunnel4"
command -v haproxy >/dev/null 2>&1 || missing="$missing haproxy"
command -v runc >/dev/null 2>&1 || missing="$missing runc"
command -v perf >/dev/null 2>&1 || missing="$missing linux-perf"
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    if [ "$missing" != " linux-perf" ]; then
      echo "bench-peers: needs$missing; run as root or: sudo apt-get install -y$missing" >&2
      exit 1
    fi
    echo "bench-peers: no perf (Debian's linux-perf); measuring without what a new connection waits on" >&2
  else
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi

# 10,000 idle connections cost the gateway and connect two descriptors
# each, and the measuring tool one.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

GO=${GO:-go}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$GO build -o bin/wakegate ./cmd/wakegate
$GO build -o "$tmp/echo" ./cmd/wakegate/testdata/echoengine
$GO build -o "$tmp/benchpeers" ./scripts/benchpeers
"$tmp/benchpeers" -wakegate bin/wakegate -echo "$tmp/echo" -out bench/latest.txt "$@"
