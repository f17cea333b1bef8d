#!/usr/bin/env bash
# The main job with a Dagger engine, end to end on this machine with the
# embedded local provider: the dagger CLI through `wakegate connect` and the
# mTLS gateway wakes a real Dagger engine (in its own namespaces: this host
# is left as it was); a query reads back a file it made; a container runs,
# and a second run of it is CACHED; the engine stops after the idle period,
# cleanly; a third run wakes it again and is still CACHED, because Dagger's
# cache (its state directory) survived the stop.
#
# Run through `make demo-dagger`, which builds wakegate, unpacks Dagger's
# binaries into bin/dagger and installs what its engine needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$PWD/bin
DAGGER_BIN=${WAKEGATE_DAGGER_BIN:-$BIN/dagger}
DEMO=$PWD/.demo-dagger
PORT=${WAKEGATE_DEMO_PORT:-18453}
ADMIN_PORT=$((PORT + 1))
IDLE=${WAKEGATE_DEMO_IDLE:-10s}
GATEWAY=127.0.0.1:$PORT

# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh

[ -x "$DAGGER_BIN/dagger" ] || fail "no dagger CLI in $DAGGER_BIN: run 'make dagger'"
rm -rf "$DEMO"
mkdir -p "$DEMO"
# Unix socket paths are limited to 107 bytes: keep engine state short.
STATE=$(mktemp -d /tmp/wakegate-demo-dagger.XXXXXX)

make_ca

step "starting the gateway (local Dagger engine, idle stop after $IDLE); log in .demo-dagger/gateway.log"
start_gateway --engine dagger --engine-bin "$DAGGER_BIN"

# A container rootfs with a static busybox: no image is pulled.
ROOTFS=$DEMO/rootfs
mkdir -p "$ROOTFS/bin"
cp /bin/busybox "$ROOTFS/bin/busybox"
mkdir -p "$DEMO/work" "$DEMO/home"
# The dagger CLI with everything that would reach the network turned off,
# in a directory of its own (no dagger.json above it).
DAGGER=(env -C "$DEMO/work" DO_NOT_TRACK=1 DAGGER_NO_NAG=1 DAGGER_NO_UPDATE_CHECK=1 NO_COLOR=1
  HOME="$DEMO/home" "$DAGGER_BIN/dagger")

call() {
  local n=$1; shift
  local out=$DEMO/call-$n.log
  local start=$(date +%s.%N)
  "$BIN/wakegate" connect --gateway "$GATEWAY" --creds "$DEMO/creds" --listen 127.0.0.1:0 -- "${DAGGER[@]}" "$@" \
    >"$out" 2>&1 || { cat "$out"; fail "call $n failed"; }
  TOOK=$(echo "$(date +%s.%N) - $start" | bc)
  grep '^wakegate:' "$out" || true
}

exec_call() {
  step "call $1: wakegate connect -- dagger -c 'container | with-rootfs … | with-exec …'"
  call "$1" --progress plain -c "container | with-rootfs \$(host | directory $ROOTFS) | with-exec -- /bin/busybox sh -c \"echo compiling...; /bin/busybox sleep 3; echo done\" | stdout"
  if grep -q 'withExec CACHED' "$DEMO/call-$1.log"; then
    printf 'withExec: CACHED   (call took %.1fs)\n' "$TOOK"; LAST=cached
  else
    printf 'withExec: executed (call took %.1fs)\n' "$TOOK"; LAST=executed
  fi
}

step "call 1: wakegate connect -- dagger api query (a directory with a new file, read back)"
printf '%s\n' '{ directory { withNewFile(path: "hello.txt", contents: "hello from a woken Dagger engine\n") { file(path: "hello.txt") { contents } } } }' >"$DEMO/query.graphql"
call 1 api query -M --doc "$DEMO/query.graphql"
grep -q 'hello from a woken Dagger engine' "$DEMO/call-1.log" || { cat "$DEMO/call-1.log"; fail "the query did not read its file back"; }
grep -o '"contents": "[^"]*"' "$DEMO/call-1.log"

exec_call 2
[ "$LAST" = executed ] || fail "call 2 should run its withExec on an empty cache"
exec_call 3
[ "$LAST" = cached ] || fail "call 3 should be CACHED"

step "waiting for the idle stop ($IDLE with no connections, then Dagger's own clean stop, ~16s)"
wait_stopped
grep -c 'successfully marked clean shutdown' "$STATE/engine-0/dagger.log" | sed 's/^/clean shutdowns recorded by Dagger: /'
echo "Dagger processes left: $(pgrep -f "$STATE/engine-0" | wc -l)"

exec_call 4
[ "$LAST" = cached ] || fail "call 4 should be CACHED: Dagger's cache survived the stop"
wake_ms=$(grep 'engine ready' "$DEMO/gateway.log" | tail -1 | grep -oE 'wake_ms=[0-9]+' | cut -d= -f2)

step "done"
echo "call 2 ran the withExec; calls 3 and 4 were CACHED."
echo "the engine stopped cleanly after $IDLE idle and woke again in ${wake_ms} ms for call 4."
echo "logs: .demo-dagger/gateway.log, .demo-dagger/call-{1,2,3,4}.log, engine: $STATE/engine-0/dagger.log (removed at exit)"
