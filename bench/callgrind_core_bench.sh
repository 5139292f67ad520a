#!/usr/bin/env bash
# Instructions per operation of each core_bench case, for two binaries (a parent's and this
# tree's) or one binary in two environments, counted by callgrind: a figure the shared machine's
# load does not move. Each case runs at N and 2N operations; (I(2N) - I(N)) / N removes startup.
#
# Usage: BASE=/path/to/parent/core_bench [NEW=build/release/bench/core_bench] \
#          [BASE_ENV="VAR=x ..."] [NEW_ENV="VAR=y ..."] [N=20000] [CASES="spawn pingpong ..."] \
#          bash bench/callgrind_core_bench.sh
#   e.g. the cost of debug mode: BASE=build/release/bench/core_bench NEW_ENV=ASYNCIO_DEBUG=1 bash ...
# Prints one line per case: case= base_instr_per_op= new_instr_per_op= ratio=.
set -u -o pipefail
base=${BASE:?set BASE to a core_bench binary}
new=${NEW:-build/release/bench/core_bench}
N=${N:-20000}
CASES=${CASES:-spawn sleepers pingpong generator_send timer_cancel wait_for_ready taskgroup queue_pingpong lock_handoff lock_uncontended future_roundtrip}
command -v valgrind >/dev/null || { echo "callgrind_core_bench: valgrind not found (apt-get install -y valgrind)" >&2; exit 2; }
instr() {  # instr ENV BIN CASE N -> total instructions
  env $1 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$2" --case "$3" --n "$4" 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
per_op() {  # per_op ENV BIN CASE
  local a b
  a=$(instr "$1" "$2" "$3" "$N") && b=$(instr "$1" "$2" "$3" $((2 * N))) || return 1
  [[ -n $a && -n $b ]] || return 1
  awk -v a="$a" -v b="$b" -v n="$N" 'BEGIN{printf "%.1f", (b - a) / n}'
}
for c in $CASES; do
  if ! "$base" --case "$c" --n 10 >/dev/null 2>&1; then echo "case=$c base_instr_per_op=n/a"; continue; fi
  b=$(per_op "${BASE_ENV:-}" "$base" "$c") || b=n/a
  m=$(per_op "${NEW_ENV:-}" "$new" "$c") || m=n/a
  echo "case=$c base_instr_per_op=$b new_instr_per_op=$m ratio=$(awk -v a="$b" -v b="$m" 'BEGIN{if (a+0 > 0) printf "%.3f", b/a; else print "n/a"}')"
done
