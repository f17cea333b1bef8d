#!/bin/sh
dir="$WAKEGATE_EXEC_ROOT/$WAKEGATE_ENGINE"
if [ -s "$dir/pid" ] && state=$(awk '{print $3}' "/proc/$(cat "$dir/pid")/stat" 2>/dev/null) && [ "$state" != Z ]; then
  echo running
else
  echo stopped
fi
