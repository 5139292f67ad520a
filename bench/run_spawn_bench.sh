#!/usr/bin/env bash
# Subprocess benchmark: spawn-and-wait of /bin/true (one at a time and 8 at a time) for our
# create_subprocess_exec, a blocking posix_spawn+waitpid loop (the reference), Python asyncio,
# uvloop and Go's os/exec; then 1 GiB through `cat` and back with our pipes against the shell
# pipeline `cat FILE | cat > /dev/null`. Everything is pinned to one core (children inherit it).
#
# Usage: bash bench/run_spawn_bench.sh [BUILD_DIR]     (default: build/release)
# Environment: N (children per run, default 2000), REPEAT (runs per case, medians; default 3),
#   CPU (core to pin to, default 1), BYTES (cat case, default 1073741824), PYTHON (default
#   /usr/bin/python3). Peers missing are installed with apt-get when root (python3-uvloop,
#   golang-go), else skipped.
#
# Output: one line per run, then one `median` line per case and implementation with its ratio to
# the blocking loop (per_s / blocking per_s; higher is better).
set -u -o pipefail
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd -- "$script_dir/.." && pwd)
build=${1:-$repo_root/build/release}
bin=$build/bench/spawn_bench
N=${N:-2000}
REPEAT=${REPEAT:-3}
CPU=${CPU:-1}
BYTES=${BYTES:-1073741824}
python=${PYTHON:-/usr/bin/python3}
note() { printf 'run_spawn_bench: %s\n' "$*" >&2; }
if [[ ! -x $bin ]]; then
  note "$bin not found: cmake --build --preset release --target spawn_bench"
  exit 2
fi
pin=(taskset -c "$CPU")
command -v taskset >/dev/null || pin=()

have_root_apt() { [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; }
if ! "$python" -c 'import uvloop' >/dev/null 2>&1 && have_root_apt; then
  note "installing python3-uvloop"
  apt-get install -y -qq python3-uvloop >/dev/null 2>&1 || true
fi
if ! command -v go >/dev/null 2>&1 && have_root_apt; then
  note "installing golang-go"
  apt-get install -y -qq golang-go >/dev/null 2>&1 || true
fi
impls=(blocking ours)
"$python" -c 'import asyncio' >/dev/null 2>&1 && impls+=(python-asyncio)
"$python" -c 'import uvloop' >/dev/null 2>&1 && impls+=(python-uvloop) || note "no uvloop: skipped"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/spawn_bench.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
if command -v go >/dev/null 2>&1; then
  if (cd "$tmp" && cp "$script_dir/peers/spawn_go.go" . && GOCACHE=$tmp/cache go build -o spawn_go spawn_go.go) >/dev/null 2>&1; then
    impls+=(go)
  else
    note "go build failed: go skipped"
  fi
else
  note "no go: skipped"
fi

run_impl() { # IMPL PARALLEL -> one result line
  case $1 in
    blocking|ours) "${pin[@]}" "$bin" --impl "$1" --case spawn --n "$N" --parallel "$2" ;;
    python-asyncio) "${pin[@]}" "$python" "$script_dir/peers/spawn_asyncio.py" --n "$N" --parallel "$2" --loop asyncio ;;
    python-uvloop) "${pin[@]}" "$python" "$script_dir/peers/spawn_asyncio.py" --n "$N" --parallel "$2" --loop uvloop ;;
    go) "${pin[@]}" "$tmp/spawn_go" -n "$N" -parallel "$2" ;;
  esac
}
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2" | head -n1; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for parallel in 1 8; do
  declare -A runs=()
  for ((r = 0; r < REPEAT; r++)); do
    for impl in "${impls[@]}"; do  # alternating: machine noise hits every implementation alike
      line=$(run_impl "$impl" "$parallel")
      echo "$line"
      runs[$impl]+=" $(field per_s "$line")"
    done
  done
  # shellcheck disable=SC2086
  base=$(median ${runs[blocking]})
  for impl in "${impls[@]}"; do
    # shellcheck disable=SC2086
    m=$(median ${runs[$impl]})
    printf 'median case=spawn impl=%s parallel=%d per_s=%s ratio_vs_blocking=%s\n' "$impl" "$parallel" "$m" \
      "$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.3f", a / b}')"
  done
  unset runs
done

# Pipes: BYTES through cat and back (ours) against cat FILE | cat > /dev/null.
head -c "$BYTES" /dev/zero >"$tmp/data"
ours=() shell=()
for ((r = 0; r < REPEAT; r++)); do
  line=$("${pin[@]}" "$bin" --impl ours --case cat --bytes "$BYTES")
  echo "$line"
  ours+=("$(field mib_per_s "$line")")
  t0=$(date +%s.%N)
  "${pin[@]}" bash -c 'cat "$0" | cat > /dev/null' "$tmp/data"
  s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}')
  mibs=$(awk -v s="$s" -v b="$BYTES" 'BEGIN {printf "%.1f", b / 1048576 / s}')
  echo "case=cat impl=shell-pipeline bytes=$BYTES seconds=$s mib_per_s=$mibs"
  shell+=("$mibs")
done
o=$(median "${ours[@]}")
s=$(median "${shell[@]}")
printf 'median case=cat impl=ours mib_per_s=%s shell_pipeline_mib_per_s=%s ratio=%s\n' "$o" "$s" \
  "$(awk -v a="$o" -v b="$s" 'BEGIN {printf "%.3f", a / b}')"
