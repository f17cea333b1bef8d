#!/usr/bin/env bash
# The main job, end to end on this machine with the embedded local provider:
# a build through `wakegate connect` and the mTLS gateway wakes a real
# buildkitd; a second build is fully CACHED; the engine stops after the idle
# period; a third build wakes it again and is still CACHED, because the
# engine's state directory (its cache volume) persisted.
#
# Run through `make demo`, which builds wakegate, buildkitd and buildctl and
# installs runc and busybox-static first.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$PWD/bin
DEMO=$PWD/.demo
PORT=${WAKEGATE_DEMO_PORT:-18443}
ADMIN_PORT=$((PORT + 1))
IDLE=${WAKEGATE_DEMO_IDLE:-10s}
GATEWAY=127.0.0.1:$PORT

# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh

rm -rf "$DEMO"
mkdir -p "$DEMO"
# Unix socket paths are limited to 107 bytes: keep engine state short.
STATE=$(mktemp -d /tmp/wakegate-demo.XXXXXX)

make_ca

step "starting the gateway (local provider, idle stop after $IDLE); log in .demo/gateway.log"
start_gateway --buildkitd "$BIN/buildkitd"
echo "gateway on $GATEWAY, engines: $(curl -fsS "127.0.0.1:$ADMIN_PORT/engines" 2>/dev/null || echo '?')"

step "preparing a build context (a busybox-static rootfs, so no image is pulled)"
CTX=$DEMO/context
mkdir -p "$CTX/rootfs/bin"
cp /bin/busybox "$CTX/rootfs/bin/busybox"
cat >"$CTX/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
RUN ["/bin/busybox", "sh", "-c", "echo compiling...; /bin/busybox sleep 3; echo done > /artifact"]
DOCKERFILE

build() {
  local n=$1 out=$DEMO/build-$1.log
  step "build $n: wakegate connect -- buildctl build"
  local start=$(date +%s.%N)
  "$BIN/wakegate" connect --gateway "$GATEWAY" --creds "$DEMO/creds" --listen 127.0.0.1:0 -- \
    "$BIN/buildctl" build --frontend dockerfile.v0 --local context="$CTX" --local dockerfile="$CTX" --progress plain \
    >"$out" 2>&1 || { cat "$out"; fail "build $n failed"; }
  local took=$(echo "$(date +%s.%N) - $start" | bc)
  grep '^wakegate:' "$out" || true
  local step_no=$(grep -oE '^#[0-9]+ \[[0-9]+/[0-9]+\] RUN' "$out" | head -1 | cut -d' ' -f1)
  if grep -q "^$step_no CACHED" "$out"; then
    printf 'RUN step: CACHED   (build took %.1fs)\n' "$took"; LAST=cached
  else
    printf 'RUN step: executed (build took %.1fs)\n' "$took"; LAST=executed
  fi
}

build 1
[ "$LAST" = executed ] || fail "build 1 should run its RUN step on an empty cache"
build 2
[ "$LAST" = cached ] || fail "build 2 should be fully CACHED"

step "waiting for the idle stop ($IDLE with no connections)"
wait_stopped
echo "engine-0: stopped; buildkitd processes left: $(pgrep -f "buildkitd --root $STATE" | wc -l)"

build 3
[ "$LAST" = cached ] || fail "build 3 should be CACHED: the cache volume persisted across the stop"
wake_ms=$(grep 'engine ready' "$DEMO/gateway.log" | tail -1 | grep -oE 'wake_ms=[0-9]+' | cut -d= -f2)

step "done"
echo "build 1 ran the RUN step; builds 2 and 3 were CACHED."
echo "the engine stopped after $IDLE idle and woke again in ${wake_ms} ms for build 3."
echo "logs: .demo/gateway.log, .demo/build-{1,2,3}.log"
