# Shared by demo.sh and demo-dagger.sh (sourced, not run): output helpers,
# the CA and credentials, and a gateway started on the local provider and
# waited for. Expects BIN, DEMO, STATE, GATEWAY, PORT, ADMIN_PORT and IDLE.

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf '\ndemo failed: %s\n' "$*" >&2; exit 1; }

make_ca() {
  step "creating a CA and client credentials (wakegate certs)"
  "$BIN/wakegate" certs init --ca-dir "$DEMO/ca" --no-password
  "$BIN/wakegate" certs issue --ca-dir "$DEMO/ca" --identity demo-ci --out "$DEMO/creds"
}

# start_gateway ARGS...: a gateway with the local provider and ARGS (the
# engine's flags), its log in $DEMO/gateway.log, stopped when the demo
# exits; returns once it listens.
start_gateway() {
  "$BIN/wakegate" gateway --ca-dir "$DEMO/ca" --state "$STATE" "$@" \
    --listen "$GATEWAY" --admin "127.0.0.1:$ADMIN_PORT" --ca-listen "127.0.0.1:$((PORT + 2))" --idle "$IDLE" --wake-timeout 60s \
    >"$DEMO/gateway.log" 2>&1 &
  GW_PID=$!
  trap 'kill -TERM "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null || true; rm -rf "$STATE"' EXIT
  for _ in $(seq 100); do
    grep -q 'gateway listening' "$DEMO/gateway.log" 2>/dev/null && return 0
    kill -0 "$GW_PID" 2>/dev/null || { cat "$DEMO/gateway.log"; fail "the gateway exited"; }
    sleep 0.1
  done
  fail "the gateway did not start listening within 10s"
}

# engine_state is engine-0's state as the gateway's admin endpoint says it.
engine_state() { curl -fsS "127.0.0.1:$ADMIN_PORT/engines" | grep -oE '"state":"[a-z]+"' | head -1 | cut -d'"' -f4; }

# wait_stopped shows engine-0's state each second until it is stopped
# (at most 2 minutes).
wait_stopped() {
  for i in $(seq 120); do
    state=$(engine_state)
    [ "$state" = stopped ] && return 0
    echo "engine-0: $state (${i}s)"
    sleep 1
  done
  fail "the engine did not stop after the idle period"
}
