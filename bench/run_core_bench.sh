#!/usr/bin/env bash
# Compare the C++ core_bench binary with its Python peers (asyncio, uvloop).
#
# Usage: bash bench/run_core_bench.sh [BUILD_DIR]      (default: build/release)
#
# Environment:
#   REPEAT=R     runs per case and implementation; the median is reported (default 3)
#   QUICK=1      divide every n by 10 for a fast smoke run
#   PYTHON=path  interpreter for the peers (default /usr/bin/python3)
#   PIN_CPU=c    core to pin every run to with taskset (default 1; empty = no pinning)
#   CASES="..."  only run these case names (default: all)
#
# Output (stdout): one line per case and implementation, then one ratio line per
# case and peer, then a markdown table.  Progress and notes go to stderr.
# See bench/README.md.
set -u -o pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd -- "$script_dir/.." && pwd)
peer="$script_dir/peers/core_bench.py"

note() { printf '%s\n' "run_core_bench: $*" >&2; }

# ---------------------------------------------------------------- arguments
build_arg=${1:-build/release}
if [[ $build_arg == /* ]]; then
  build_dir=$build_arg
elif [[ -d $build_arg ]]; then
  build_dir=$(cd -- "$build_arg" && pwd)
else
  build_dir=$repo_root/$build_arg
fi
cpp_bin=$build_dir/bench/core_bench

repeat=${REPEAT:-3}
if ! [[ $repeat =~ ^[1-9][0-9]*$ ]]; then
  note "REPEAT must be a positive integer (got '$repeat')"
  exit 2
fi
div=1
[[ ${QUICK:-0} == 1 ]] && div=10
python=${PYTHON:-/usr/bin/python3}
pin_cpu=${PIN_CPU-1}

if [[ ! -x $cpp_bin ]]; then
  cat >&2 <<EOF
run_core_bench: C++ benchmark binary not found: $cpp_bin
Build it first, from the repository root:
    cmake --preset release && cmake --build --preset release --target core_bench
(or pass the build directory that contains bench/core_bench as the first argument)
EOF
  exit 2
fi

# Every case the runner knows: "name n".
all_cases=(
  "spawn 1000000"
  "sleepers 100000"
  "sleepers 1000000"
  "pingpong 1000000"
  "generator_send 10000000"
  "timer_cancel 1000000"
  "wait_for_ready 1000000"
  "taskgroup 1000000"
  "queue_pingpong 1000000"
  "lock_handoff 1000000"
  "lock_uncontended 10000000"
  "future_roundtrip 1000000"
  "threadsafe_post 1000000"
  "threadsafe_post2 1000000"
)
cases=()
for c in "${all_cases[@]}"; do
  name=${c%% *}
  if [[ -n ${CASES:-} ]] && ! [[ " $CASES " == *" $name "* ]]; then
    continue
  fi
  cases+=("$name $(( ${c##* } / div ))")
done
if (( ${#cases[@]} == 0 )); then
  note "CASES='${CASES:-}' selects no case"
  exit 2
fi

# ---------------------------------------------------------------- pinning
pin=()
if [[ -n $pin_cpu ]]; then
  if command -v taskset >/dev/null 2>&1; then
    if taskset -c "$pin_cpu" true >/dev/null 2>&1; then
      pin=(taskset -c "$pin_cpu")
    else
      note "cannot pin to core $pin_cpu; running unpinned"
    fi
  else
    note "taskset not found; running unpinned"
  fi
fi

# ---------------------------------------------------------------- peers
impls=(cpp)
have_python=0
if [[ -x $python ]] && [[ -f $peer ]]; then
  have_python=1
  impls+=(python-asyncio)
else
  note "no Python peer ($python or $peer missing); skipping python-asyncio and python-uvloop"
fi

if (( have_python )); then
  if ! "$python" -c 'import uvloop' >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      note "uvloop not importable by $python; trying apt-get install -y python3-uvloop"
      to=()
      command -v timeout >/dev/null 2>&1 && to=(timeout 600)
      export DEBIAN_FRONTEND=noninteractive
      if ! "${to[@]}" apt-get install -y -qq python3-uvloop >/dev/null 2>&1; then
        # The package lists may be empty (fresh container): refresh once and retry.
        "${to[@]}" apt-get update -qq >/dev/null 2>&1 &&
          "${to[@]}" apt-get install -y -qq python3-uvloop >/dev/null 2>&1
      fi
    fi
  fi
  if "$python" -c 'import uvloop' >/dev/null 2>&1; then
    impls+=(python-uvloop)
  else
    note "uvloop is not importable by $python; skipping python-uvloop"
  fi
fi

# ---------------------------------------------------------------- running
declare -A ns_of bytes_of   # key: "case n impl" -> median
failures=0

run_once() { # IMPL CASE N -> prints "ns bytes" or fails
  local impl=$1 case=$2 n=$3 out line
  local -a cmd
  case $impl in
    cpp) cmd=("$cpp_bin" --case "$case" --n "$n") ;;
    python-asyncio) cmd=("$python" "$peer" --case "$case" --n "$n" --loop asyncio) ;;
    python-uvloop) cmd=("$python" "$peer" --case "$case" --n "$n" --loop uvloop) ;;
  esac
  if ! out=$(env -u PYTHONASYNCIODEBUG -u PYTHONDEVMODE "${pin[@]}" "${cmd[@]}"); then
    note "FAILED: ${cmd[*]}"
    return 1
  fi
  line=$(grep -m1 "^case=$case " <<<"$out") || {
    note "no result line from: ${cmd[*]} (output: $out)"
    return 1
  }
  local ns bytes got_n
  got_n=$(sed -n 's/.* n=\([0-9][0-9]*\).*/\1/p' <<<"$line")
  ns=$(sed -n 's/.* ns_per_op=\([0-9.eE+-][0-9.eE+-]*\).*/\1/p' <<<"$line")
  bytes=$(sed -n 's/.* bytes_per_task=\([0-9][0-9]*\).*/\1/p' <<<"$line")
  if [[ -z $ns || -z $bytes || $got_n != "$n" ]]; then
    note "malformed result line from ${cmd[*]}: $line"
    return 1
  fi
  echo "$ns $bytes"
}

median() { # numbers on stdin, one per line
  sort -g | awk '{ v[NR] = $1 }
    END { if (NR == 0) exit 1
          if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
          print m }'
}

for c in "${cases[@]}"; do
  name=${c%% *}
  n=${c##* }
  declare -A ns_runs=() bytes_runs=()
  for (( rep = 1; rep <= repeat; rep++ )); do
    # Interleave implementations so slow drift of the machine hits all alike.
    for impl in "${impls[@]}"; do
      # generator_send does not involve an event loop: run it once, as python-asyncio.
      [[ $name == generator_send && $impl == python-uvloop ]] && continue
      note "case=$name n=$n impl=$impl run $rep/$repeat"
      if r=$(run_once "$impl" "$name" "$n"); then
        ns_runs[$impl]+="${r%% *}"$'\n'
        bytes_runs[$impl]+="${r##* }"$'\n'
      else
        failures=$(( failures + 1 ))
      fi
    done
  done
  for impl in "${impls[@]}"; do
    [[ -n ${ns_runs[$impl]:-} ]] || continue
    ns=$(printf '%s' "${ns_runs[$impl]}" | median)
    bytes=$(printf '%s' "${bytes_runs[$impl]}" | median)
    ns=$(awk -v x="$ns" 'BEGIN { printf "%.1f", x }')
    bytes=$(awk -v x="$bytes" 'BEGIN { printf "%d", x + 0.5 }')
    ns_of["$name $n $impl"]=$ns
    bytes_of["$name $n $impl"]=$bytes
    echo "case=$name n=$n impl=$impl ns_per_op=$ns bytes_per_task=$bytes"
  done
  unset ns_runs bytes_runs
done

# ---------------------------------------------------------------- ratios
ratio() { # NUM DEN -> one decimal (two below 1.0), or n/a
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "" || b == "" || a + 0 <= 0 || b + 0 <= 0) { print "n/a"; exit }
    r = a / b; if (r < 1) printf "%.2f\n", r; else printf "%.1f\n", r }'
}

for c in "${cases[@]}"; do
  name=${c%% *}
  n=${c##* }
  cpp_ns=${ns_of["$name $n cpp"]:-}
  [[ -n $cpp_ns ]] || continue
  for impl in "${impls[@]}"; do
    [[ $impl == cpp ]] && continue
    peer_ns=${ns_of["$name $n $impl"]:-}
    [[ -n $peer_ns ]] || continue
    echo "case=$name n=$n ratio_vs=$impl speedup=$(ratio "$peer_ns" "$cpp_ns")" \
         "mem_ratio=$(ratio "${bytes_of["$name $n $impl"]}" "${bytes_of["$name $n cpp"]}")"
  done
done

# ---------------------------------------------------------------- table
cell() { local v=${1:-}; [[ -n $v ]] && printf '%s' "$v" || printf '%s' '—'; }
has() { local x; for x in "${impls[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }

echo
hdr="| case | n | C++ ns/op"
sep="|---|---:|---:"
for impl in python-asyncio python-uvloop; do
  has "$impl" || continue
  hdr+=" | ${impl#python-} ns/op | speedup vs ${impl#python-}"
  sep+="|---:|---:"
done
hdr+=" | C++ B/task"
sep+="|---:"
for impl in python-asyncio python-uvloop; do
  has "$impl" || continue
  hdr+=" | ${impl#python-} B/task | mem ratio vs ${impl#python-}"
  sep+="|---:|---:"
done
echo "$hdr |"
echo "$sep|"
for c in "${cases[@]}"; do
  name=${c%% *}
  n=${c##* }
  cpp_ns=${ns_of["$name $n cpp"]:-}
  cpp_b=${bytes_of["$name $n cpp"]:-}
  row="| $name | $n | $(cell "$cpp_ns")"
  for impl in python-asyncio python-uvloop; do
    has "$impl" || continue
    p=${ns_of["$name $n $impl"]:-}
    s=
    [[ -n $p && -n $cpp_ns ]] && s="$(ratio "$p" "$cpp_ns")×"
    row+=" | $(cell "$p") | $(cell "$s")"
  done
  row+=" | $(cell "$cpp_b")"
  for impl in python-asyncio python-uvloop; do
    has "$impl" || continue
    p=${bytes_of["$name $n $impl"]:-}
    m=
    if [[ -n $p && -n $cpp_b ]]; then
      m=$(ratio "$p" "$cpp_b")
      [[ $m != n/a ]] && m+="×"
    fi
    row+=" | $(cell "$p") | $(cell "$m")"
  done
  echo "$row |"
done
echo
echo "Median of $repeat run(s) each${pin:+, pinned with ${pin[*]}}; speedup = Python ns/op ÷ C++ ns/op;" \
     "mem ratio = Python bytes/task ÷ C++ bytes/task (n/a where a side reports 0)." \
     "generator_send involves no event loop and is run once, under python-asyncio."

if (( failures )); then
  note "$failures run(s) failed; see above"
  exit 1
fi
