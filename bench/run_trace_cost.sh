#!/usr/bin/env bash
# What tracing costs when it is on: each core_bench case run alternately without and with
# ASYNCIO_TRACE (5 times each, pinned to one core), printing the medians, on/off and the size of
# the trace written. n is smaller than core_bench's default: a traced spawn of 1,000,000 tasks
# writes ~0.5 GB. (The cost when off: bench/compare_core_bench.sh against the parent commit.)
#
# Usage: [BIN=build/release/bench/core_bench] [OUT=/tmp/asyncio_trace_cost.json] bash bench/run_trace_cost.sh
set -u -o pipefail
bin=${BIN:-build/release/bench/core_bench}
out=${OUT:-/tmp/asyncio_trace_cost.json}
pin_cpu=${PIN_CPU-1}
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
for spec in spawn:100000 sleepers:100000 pingpong:100000 timer_cancel:100000 queue_pingpong:100000 \
            lock_handoff:100000 future_roundtrip:100000; do
  c=${spec%%:*}; n=${spec##*:}
  pin=(taskset -c "$pin_cpu"); [[ -z $pin_cpu ]] && pin=()
  offs=(); ons=(); size=0
  for _ in 1 2 3 4 5; do
    l=$(env -u ASYNCIO_TRACE "${pin[@]}" "$bin" --case "$c" --n "$n"); offs+=("$(field ns_per_op "$l")")
    rm -f "$out"
    l=$(ASYNCIO_TRACE="$out" "${pin[@]}" "$bin" --case "$c" --n "$n"); ons+=("$(field ns_per_op "$l")")
    size=$(stat -c %s "$out")
  done
  rm -f "$out"*
  python3 - "$c" "$n" "$size" "${offs[*]}" "${ons[*]}" <<'PY'
import statistics, sys
c, n, size, offs, ons = sys.argv[1:]
off = statistics.median(float(x) for x in offs.split())
on = statistics.median(float(x) for x in ons.split())
print(f"case={c} n={n} off_ns={off} on_ns={on} ratio={on / off:.2f} trace_bytes={size} "
      f"bytes_per_op={int(size) / int(n):.0f}")
PY
done
