#!/usr/bin/env bash
# asyncio-inspect on a loaded server: bench_echo_server (one loop) started with ASYNCIO_INSPECT=1,
# echo_load holding CONNS connections on it (one task each on the server), and `asyncio-inspect ps`
# run RUNS times while they echo. Reports, per run, the tool's wall time end to end (process start
# to exit, as a user sees it), the tasks listed, and how long building the snapshot held the
# server's loop (the tool's --timing: measured on the loop's thread); then the echo throughput of a
# window without inspection against one with the runs in it.
#
# Usage: bash bench/run_inspect_bench.sh [BUILD_DIR]     (default: build/release)
# Environment: CONNS (default 10000), RUNS (default 10), DURATION (each load window, s; default 6).
set -u -o pipefail
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd -- "$script_dir/.." && pwd)
build=${1:-$repo_root/build/release}
CONNS=${CONNS:-10000}
RUNS=${RUNS:-10}
DURATION=${DURATION:-6}
server=$build/bench/bench_echo_server
load=$build/bench/echo_load
tool=$build/tools/asyncio-inspect
for b in "$server" "$load" "$tool"; do
  [[ -x $b ]] || { echo "run_inspect_bench: $b not found (cmake --build --preset release)" >&2; exit 2; }
done

out=$(mktemp)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -f "$out" "$out.load" "$out.timing"
}
trap cleanup EXIT
fail() { echo "run_inspect_bench: $*" >&2; exit 1; }

ASYNCIO_INSPECT=1 "$server" 0 >"$out" 2>&1 &
server_pid=$!
pids+=("$server_pid")
port=
for _ in $(seq 1 100); do
  port=$(sed -n 's/^serving on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out") && [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || fail "bench_echo_server did not start"

echo "== load without inspection: $CONNS connections, ${DURATION} s"
"$load" --port "$port" --conns "$CONNS" --size 64 --duration "$DURATION" --warmup 1 --server-pid "$server_pid" \
  || fail "echo_load failed"

echo "== load with asyncio-inspect ps running $RUNS times in the window"
"$load" --port "$port" --conns "$CONNS" --size 64 --duration "$DURATION" --warmup 1 --server-pid "$server_pid" \
  >"$out.load" &
load_pid=$!
pids+=("$load_pid")
# Until the server holds every connection (its tasks listed: one per connection, plus main).
for _ in $(seq 1 600); do
  rows=$("$tool" ps "$server_pid" 2>/dev/null | tail -n +3 | wc -l)
  [ "$rows" -ge "$CONNS" ] && break
  sleep 0.1
done
[ "$rows" -ge "$CONNS" ] || fail "the server never listed $CONNS tasks (last: $rows)"
sleep 1.5  # into the measured window
max_wall=0
max_stall=0
for i in $(seq 1 "$RUNS"); do
  t0=$(date +%s%N)
  rows=$("$tool" ps --timing "$server_pid" 2>"$out.timing" | tail -n +3 | wc -l)
  t1=$(date +%s%N)
  wall_ms=$(( (t1 - t0) / 1000000 ))
  stall=$(sed -n 's/.*the snapshot held the loop \([0-9.e+-]*\) ms/\1/p' "$out.timing" | head -1)
  echo "run $i: wall_ms=$wall_ms tasks=$rows loop_stall_ms=$stall"
  max_wall=$(( wall_ms > max_wall ? wall_ms : max_wall ))
  max_stall=$(awk -v a="$max_stall" -v b="$stall" 'BEGIN { print (b + 0 > a + 0) ? b : a }')
  sleep 0.3
done
wait "$load_pid" || fail "echo_load failed under inspection"
cat "$out.load"
echo "max: wall_ms=$max_wall loop_stall_ms=$max_stall"
