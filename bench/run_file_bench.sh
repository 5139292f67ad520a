#!/usr/bin/env bash
# The files benchmark of issue #9:
#   * read: one big file (1 GiB) read through asyncio::open_file in 64 KiB and 1 MiB chunks, on
#     each backend, against `dd if=FILE of=/dev/null bs=CHUNK` on the same file; page cache warm,
#     and dropped (the file's pages only: `dd iflag=nocache count=0`, checked with fincore);
#   * small: N (10,000) files of 4 KiB read at once (a task each): our open_file + read + close
#     and our to_thread(open/read/close), on each backend, against Python's asyncio.to_thread
#     (bench/peers/file_bench.py: three calls per file as an async file API makes them, and one).
# Files are made in a fresh directory under TMPDIR (/tmp) and deleted at the end.
#
# Usage: bash bench/run_file_bench.sh [BUILD_DIR]      (default: build/release)
#
# Environment:
#   SIZE_MB=M      size of the big file in MiB (default 1024)
#   CHUNKS="..."   read sizes in bytes (default: 65536 1048576)
#   CACHES="..."   warm and/or cold (default: warm cold)
#   N=n            small files (default 10000)      SMALL_SIZE=s  their size (default 4096)
#   REPEAT=R       runs per case and implementation, medians reported (default 3)
#   BACKENDS="..." our backends (default: epoll io_uring)
#   PYTHON=path    interpreter for the Python peer (default /usr/bin/python3; empty: skip it)
#   PIN_CPU=list   taskset -c list for every program (default: unpinned; the thread pools want
#                  both cores)
#
# Output (stdout): one line per case and implementation (medians), ratio lines, a markdown table.
# Single runs and notes go to stderr.
set -u -o pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd -- "$script_dir/.." && pwd)
peer="$script_dir/peers/file_bench.py"
note() { printf '%s\n' "run_file_bench: $*" >&2; }

build_arg=${1:-build/release}
if [[ $build_arg == /* ]]; then build_dir=$build_arg
elif [[ -d $build_arg ]]; then build_dir=$(cd -- "$build_arg" && pwd)
else build_dir=$repo_root/$build_arg
fi
bin=$build_dir/bench/file_bench
if [[ ! -x $bin ]]; then
  note "$bin not found; build it: cmake --build --preset release --target file_bench"
  exit 2
fi
size_mb=${SIZE_MB:-1024}
read -r -a chunks <<<"${CHUNKS:-65536 1048576}"
read -r -a caches <<<"${CACHES:-warm cold}"
n=${N:-10000}
small_size=${SMALL_SIZE:-4096}
repeat=${REPEAT:-3}
read -r -a backends <<<"${BACKENDS:-epoll io_uring}"
python=${PYTHON-/usr/bin/python3}
for v in "$size_mb" "$n" "$small_size" "$repeat" "${chunks[@]}"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { note "not a positive integer: '$v'"; exit 2; }
done
for c in "${caches[@]}"; do
  [[ $c == warm || $c == cold ]] || { note "CACHES takes warm and cold, not '$c'"; exit 2; }
done
pin=()
if [[ -n ${PIN_CPU:-} ]]; then pin=(taskset -c "$PIN_CPU"); fi
if [[ -n $python ]] && ! [[ -x $python && -f $peer ]]; then
  note "no Python peer ($python or $peer missing); skipping it"
  python=
fi

tmp_dir=$(mktemp -d "${TMPDIR:-/tmp}/file_bench.XXXXXX")
trap 'rm -rf -- "$tmp_dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
big=$tmp_dir/big
loadavg() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null; }
load_start=$(loadavg)
note "load average: $load_start; files in $tmp_dir"

note "writing a ${size_mb} MiB file"
dd if=/dev/zero of="$big" bs=1M count="$size_mb" conv=fsync status=none || { note "cannot write $big"; exit 1; }
big_bytes=$(stat -c %s "$big")
note "writing $n files of $small_size bytes"
"$bin" --case make-small --dir "$tmp_dir" --n "$n" --size "$small_size" || exit 1

field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p; s/^$1=\([^[:space:]]*\).*/\1/p" <<<"$2" | head -n1; }
median() {
  grep -v '^-$' | sort -g | awk '{ v[NR] = $1 }
    END { if (NR == 0) { print "-"; exit }
          if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
          print m }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a + 0 <= 0 || b + 0 <= 0) print "n/a"; else printf "%.2f\n", a / b }'; }

# Puts the big file in the page cache (warm) or takes it out (cold). The cold state drops the
# file's own pages (POSIX_FADV_DONTNEED through dd), not the whole machine's cache.
set_cache() {
  if [[ $1 == warm ]]; then
    cat "$big" >/dev/null
  else
    dd if="$big" iflag=nocache count=0 status=none
  fi
  if command -v fincore >/dev/null 2>&1; then
    local pages
    pages=$(fincore -n -b -o RES "$big" 2>/dev/null | tr -d ' ')
    if [[ $1 == cold && -n $pages && $pages != 0 ]]; then
      note "the file still has $pages bytes in the page cache after dropping it"
    fi
  fi
}

declare -A vals  # "key" -> newline-separated values
failures=0
# ---------------------------------------------------------------- big file
for (( rep = 1; rep <= repeat; rep++ )); do
  for cache in "${caches[@]}"; do
    for chunk in "${chunks[@]}"; do
      # dd
      set_cache "$cache"
      out=$(LC_ALL=C "${pin[@]}" dd if="$big" of=/dev/null bs="$chunk" 2>&1 | tail -n1)
      # "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 0.21 s, 5.1 GB/s"
      secs=$(sed -n 's/.* copied, \([0-9.e+-]*\) s,.*/\1/p' <<<"$out")
      bytes=$(sed -n 's/^\([0-9]*\) bytes.*/\1/p' <<<"$out")
      if [[ -z $secs || $bytes != "$big_bytes" ]]; then
        note "dd failed: $out"; failures=$((failures + 1))
      else
        mibs=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.0f", b / s / 1048576 }')
        note "run $rep: case=read cache=$cache chunk=$chunk impl=dd seconds=$secs mib_per_s=$mibs"
        vals["read $cache $chunk dd"]+="$mibs"$'\n'
      fi
      for b in "${backends[@]}"; do
        set_cache "$cache"
        line=$(ASYNCIO_BACKEND=$b "${pin[@]}" "$bin" --case read --path "$big" --chunk "$chunk")
        rc=$?
        mibs=$(field mib_per_s "$line")
        if (( rc != 0 )) || [[ -z $mibs ]]; then
          note "file_bench read failed ($b): $line"; failures=$((failures + 1)); continue
        fi
        note "run $rep: cache=$cache $line"
        vals["read $cache $chunk ours-$b"]+="$mibs"$'\n'
      done
    done
  done
done

# ---------------------------------------------------------------- small files
small_impls=()
for b in "${backends[@]}"; do small_impls+=("ours-open_file-$b" "ours-to_thread-$b"); done
[[ -n $python ]] && small_impls+=(python-ops python-one)
cat "$tmp_dir"/f* >/dev/null 2>&1 || true  # warm (they were just written anyway)
for (( rep = 1; rep <= repeat; rep++ )); do
  for impl in "${small_impls[@]}"; do
    case $impl in
      ours-*)
        b=${impl##*-}
        kind=${impl#ours-}; kind=${kind%-*}
        line=$(ASYNCIO_BACKEND=$b "${pin[@]}" "$bin" --case small --dir "$tmp_dir" --n "$n" --size "$small_size" --impl "$kind") ;;
      python-*)
        line=$(env -u PYTHONASYNCIODEBUG -u PYTHONDEVMODE "${pin[@]}" "$python" "$peer" --dir "$tmp_dir" --n "$n" \
               --size "$small_size" --style "${impl#python-}") ;;
    esac
    rc=$?
    errs=$(field errors "$line")
    if (( rc != 0 )) || [[ -z $errs ]]; then
      note "small-files run failed ($impl): $line"; failures=$((failures + 1)); continue
    fi
    note "run $rep: $line"
    for m in p50_us p99_us total_s; do vals["small $impl $m"]+="$(field "$m" "$line")"$'\n'; done
    vals["small $impl errors"]=$(( ${vals["small $impl errors"]:-0} + errs ))
  done
done
load_end=$(loadavg)

# ---------------------------------------------------------------- results
med() { printf '%s' "${vals["$1"]:-}" | median; }
for cache in "${caches[@]}"; do
  for chunk in "${chunks[@]}"; do
    dd_m=$(med "read $cache $chunk dd")
    echo "case=read cache=$cache chunk=$chunk impl=dd bytes=$big_bytes mib_per_s=$dd_m"
    for b in "${backends[@]}"; do
      m=$(med "read $cache $chunk ours-$b")
      echo "case=read cache=$cache chunk=$chunk impl=ours backend=$b bytes=$big_bytes mib_per_s=$m ratio_vs_dd=$(ratio "$m" "$dd_m")"
    done
  done
done
py_p50=$(med "small python-ops p50_us")
for impl in "${small_impls[@]}"; do
  [[ -n ${vals["small $impl p50_us"]:-} ]] || continue
  p50=$(med "small $impl p50_us"); p99=$(med "small $impl p99_us"); tot=$(med "small $impl total_s")
  echo "case=small impl=$impl n=$n size=$small_size p50_us=$p50 p99_us=$p99 total_s=$tot" \
       "files_per_s=$(awk -v n="$n" -v t="$tot" 'BEGIN { printf "%.0f", n / t }')" \
       "errors=${vals["small $impl errors"]}" \
       "p50_vs_python_ops=$(ratio "$p50" "$py_p50")"
  (( ${vals["small $impl errors"]} == 0 )) || failures=$((failures + 1))
done

echo
echo "| read | cache | chunk | MiB/s | vs dd |"
echo "|---|---|---:|---:|---:|"
for cache in "${caches[@]}"; do
  for chunk in "${chunks[@]}"; do
    dd_m=$(med "read $cache $chunk dd")
    echo "| dd | $cache | $chunk | $dd_m | 1.00× |"
    for b in "${backends[@]}"; do
      m=$(med "read $cache $chunk ours-$b")
      echo "| open_file ($b) | $cache | $chunk | $m | $(ratio "$m" "$dd_m")× |"
    done
  done
done
echo
echo "| $n × $small_size B files at once | p50 µs | p99 µs | total s | files/s | byte errors |"
echo "|---|---:|---:|---:|---:|---:|"
for impl in "${small_impls[@]}"; do
  [[ -n ${vals["small $impl p50_us"]:-} ]] || continue
  tot=$(med "small $impl total_s")
  echo "| $impl | $(med "small $impl p50_us") | $(med "small $impl p99_us") | $tot |" \
       "$(awk -v n="$n" -v t="$tot" 'BEGIN { printf "%.0f", n / t }') | ${vals["small $impl errors"]} |"
done
echo
echo "Medians of $repeat run(s); ${pin[*]:-unpinned}; big file ${size_mb} MiB; cold = the file's pages" \
     "dropped before each run. Load average at start: $load_start; at end: $load_end."
if (( failures )); then
  note "$failures run(s) failed; see above"
  exit 1
fi
