#!/usr/bin/env bash
# Side-by-side gate for core changes: two core_bench binaries (a parent commit's and this tree's),
# each case run alternately, 5 times each, pinned to one core (the threadsafe_* cases unpinned: they
# need both), printing the medians and new/base. A case the base binary lacks prints n/a.
#
# Usage: BASE=/path/to/parent/core_bench [NEW=build/release/bench/core_bench] [BASE_ENV="VAR=x"]
#          [NEW_ENV="VAR=y"] bash bench/compare_core_bench.sh
#   (one binary in two environments, e.g. debug mode's cost: BASE=NEW's binary NEW_ENV=ASYNCIO_DEBUG=1)
# Build the parent with `git worktree add /tmp/base <commit> && cmake --preset release` there.
set -u -o pipefail
base=${BASE:?set BASE to the core_bench binary of the parent build}
new=${NEW:-build/release/bench/core_bench}
pin_cpu=${PIN_CPU-1}
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }  # field NAME LINE
for spec in spawn:1000000 sleepers:100000 pingpong:1000000 generator_send:10000000 timer_cancel:1000000 \
            wait_for_ready:1000000 taskgroup:1000000 queue_pingpong:1000000 lock_handoff:1000000 \
            lock_uncontended:10000000 threadsafe_post:1000000 future_roundtrip:1000000; do
  c=${spec%%:*}; n=${spec##*:}
  pin=(taskset -c "$pin_cpu"); [[ $c == threadsafe* || -z $pin_cpu ]] && pin=()
  bs=(); ms=(); bb=""; mb=""
  has_base=0; "$base" --case "$c" --n 10 >/dev/null 2>&1 && has_base=1
  for _ in 1 2 3 4 5; do
    if (( has_base )); then
      l=$(env ${BASE_ENV:-} "${pin[@]}" "$base" --case "$c" --n "$n")
      v=$(field ns_per_op "$l"); bs+=("$v"); bb=$(field bytes_per_task "$l")
    fi
    l=$(env ${NEW_ENV:-} "${pin[@]}" "$new" --case "$c" --n "$n")
    v=$(field ns_per_op "$l"); ms+=("$v"); mb=$(field bytes_per_task "$l")
  done
  python3 - "$c" "$bb" "$mb" "${bs[*]:-}" "${ms[*]}" <<'PY'
import statistics, sys
c, bb, mb, bs, ms = sys.argv[1:]
b = [float(x) for x in bs.split()]
m = [float(x) for x in ms.split()]
bm = statistics.median(b) if b else None
mm = statistics.median(m)
print(f"case={c} base_ns={bm if bm is not None else 'n/a'} new_ns={mm} "
      f"ratio={f'{mm / bm:.3f}' if bm else 'n/a'} base_bytes={bb or 'n/a'} new_bytes={mb}")
PY
done
