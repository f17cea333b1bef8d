#!/bin/sh
# The stop command matching start.sh: SIGTERM, then wait until the engine
# has exited (it lets builds finish and stops BuildKit cleanly first).
set -eu
dir="$WAKEGATE_EXEC_ROOT/$WAKEGATE_ENGINE"
[ -s "$dir/pid" ] || exit 0
pid=$(cat "$dir/pid")
kill -TERM "$pid" 2>/dev/null || { rm -f "$dir/pid"; exit 0; }
# An exited process whose parent is gone may linger as a zombie: count it gone.
while state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) && [ "$state" != Z ]; do
  sleep 0.1
done
rm -f "$dir/pid"
