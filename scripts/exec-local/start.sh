#!/bin/sh
# An example start command for 'wakegate gateway --provider exec': the
# "host" is this machine, each engine a background 'wakegate engine' whose
# state lives under $WAKEGATE_EXEC_ROOT. A real host's script would start a
# VM (a cloud CLI) with WAKEGATE_TOKEN, WAKEGATE_ENGINE_NAME, WAKEGATE_CA_URL
# and WAKEGATE_CA_FINGERPRINT in its environment, and print its address.
set -eu
dir="$WAKEGATE_EXEC_ROOT/$WAKEGATE_ENGINE"
mkdir -p "$dir"
if [ -s "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && [ -s "$dir/engine.addr" ]; then
  cat "$dir/engine.addr"   # already running: the same address again
  exit 0
fi
rm -f "$dir/engine.addr"
# The token stays in the environment, never in arguments.
"${WAKEGATE_BIN:-wakegate}" engine --state "$dir" --listen 127.0.0.1:0 --addr-file "$dir/engine.addr" \
  --identity "$WAKEGATE_ENGINE_NAME" >>"$dir/engine.log" 2>&1 &
echo $! >"$dir/pid"
i=0
while [ ! -s "$dir/engine.addr" ]; do
  i=$((i + 1))
  if [ "$i" -gt 600 ]; then echo "engine $WAKEGATE_ENGINE did not listen; see $dir/engine.log" >&2; exit 1; fi
  sleep 0.1
done
cat "$dir/engine.addr"
