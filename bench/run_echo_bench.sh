#!/usr/bin/env bash
# The echo benchmark: our streams server, on each of the library's backends, against two
# hand-written reference servers (raw epoll; liburing with multishot accept, multishot recv on a
# provided-buffer ring and send) and Python's asyncio and uvloop streams servers, all driven by the
# project's own load generator (echo_load).
#
# Usage: bash bench/run_echo_bench.sh [BUILD_DIR]      (default: build/release)
#
# Environment:
#   DURATION=S     measured window per run, seconds (default 5)
#   WARMUP=S       warm-up before each window, seconds (default 1)
#   REPEAT=R       runs per case and server; medians are reported (default 3)
#   PYTHON=path    interpreter for the Python peers (default /usr/bin/python3)
#   SERVER_CPU=c   core the server is pinned to with taskset (default 0; empty = no pinning)
#   LOAD_CPU=c     core the load generator is pinned to (default 1; empty = no pinning)
#   SERVERS="..."  servers to run (default: epoll uring cpp-epoll cpp-uring python-asyncio
#                  python-uvloop; `cpp` is our server on the library's default backend;
#                  uring-sendsys, uring-1shot, uring-both: the io_uring reference with send(2)
#                  per message, one-shot recvs, or both -- diagnostic variants, see README)
#   WORKLOADS="..." CONNSxSIZE cases (default: 100x64 100x16384 10000x64)
#
# Output (stdout): one line per case and server (medians), one ratio line per case, server and
# reference (epoll, uring), one target line per case for cpp-uring (issue #9's targets), then a
# markdown table. Progress and notes go to stderr.
# See bench/README.md.
set -u -o pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd -- "$script_dir/.." && pwd)
peer="$script_dir/peers/echo_server_asyncio.py"

note() { printf '%s\n' "run_echo_bench: $*" >&2; }

# ---------------------------------------------------------------- arguments
build_arg=${1:-build/release}
if [[ $build_arg == /* ]]; then
  build_dir=$build_arg
elif [[ -d $build_arg ]]; then
  build_dir=$(cd -- "$build_arg" && pwd)
else
  build_dir=$repo_root/$build_arg
fi
load_bin=$build_dir/bench/echo_load
epoll_bin=$build_dir/bench/epoll_echo_server
uring_bin=$build_dir/bench/uring_echo_server
cpp_bin=$build_dir/bench/bench_echo_server

is_num() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
duration=${DURATION:-5}
warmup=${WARMUP:-1}
repeat=${REPEAT:-3}
if ! is_num "$duration" || ! awk -v d="$duration" 'BEGIN { exit !(d > 0) }'; then
  note "DURATION must be a positive number of seconds (got '$duration')"
  exit 2
fi
if ! is_num "$warmup"; then
  note "WARMUP must be a number of seconds (got '$warmup')"
  exit 2
fi
if ! [[ $repeat =~ ^[1-9][0-9]*$ ]]; then
  note "REPEAT must be a positive integer (got '$repeat')"
  exit 2
fi
python=${PYTHON:-/usr/bin/python3}
server_cpu=${SERVER_CPU-0}
load_cpu=${LOAD_CPU-1}
all_servers=(epoll uring cpp-epoll cpp-uring python-asyncio python-uvloop)
read -r -a wanted_servers <<<"${SERVERS:-${all_servers[*]}}"
read -r -a workloads <<<"${WORKLOADS:-100x64 100x16384 10000x64}"
for w in "${workloads[@]}"; do
  if ! [[ $w =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]]; then
    note "bad workload '$w' (want CONNSxSIZE, e.g. 100x64)"
    exit 2
  fi
done
for s in "${wanted_servers[@]}"; do
  case $s in epoll | uring | uring-sendsys | uring-1shot | uring-both | cpp | cpp-epoll | cpp-uring | \
    python-asyncio | python-uvloop) ;;
    *) note "unknown server '$s' (known: ${all_servers[*]} cpp uring-sendsys uring-1shot uring-both)"; exit 2 ;;
  esac
done

if [[ ! -x $load_bin || ! -x $epoll_bin ]]; then
  cat >&2 <<EOF
run_echo_bench: benchmark binaries not found in $build_dir/bench (echo_load, epoll_echo_server).
Build them first, from the repository root:
    cmake --preset release && cmake --build --preset release --target echo_load epoll_echo_server uring_echo_server bench_echo_server
(or pass the build directory that contains bench/echo_load as the first argument)
EOF
  exit 2
fi

# ---------------------------------------------------------------- pinning
pin_to() { # CORE -> prints the taskset prefix, or nothing
  local core=$1
  [[ -n $core ]] || return 0
  if ! command -v taskset >/dev/null 2>&1; then
    note "taskset not found; running unpinned"
    return 0
  fi
  if taskset -c "$core" true >/dev/null 2>&1; then
    printf '%s\n' taskset -c "$core"
  else
    note "cannot pin to core $core; running that side unpinned"
  fi
}
mapfile -t pin_server < <(pin_to "$server_cpu")
mapfile -t pin_load < <(pin_to "$load_cpu")

# ---------------------------------------------------------------- servers
have() { local x; for x in "${wanted_servers[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }
servers=()
have epoll && servers+=(epoll)
for s in uring uring-sendsys uring-1shot uring-both; do
  have "$s" || continue
  if [[ -x $uring_bin ]]; then
    servers+=("$s")
  else
    note "$uring_bin not found (built only where liburing is); skipping $s"
  fi
done
for s in cpp cpp-epoll cpp-uring; do
  have "$s" || continue
  if [[ -x $cpp_bin ]]; then
    servers+=("$s")
  else
    note "$cpp_bin not found (streams API not built?); skipping the $s server"
  fi
done
have_python=0
if have python-asyncio || have python-uvloop; then
  if [[ -x $python ]] && [[ -f $peer ]]; then
    have_python=1
  else
    note "no Python peer ($python or $peer missing); skipping python-asyncio and python-uvloop"
  fi
fi
(( have_python )) && have python-asyncio && servers+=(python-asyncio)
if (( have_python )) && have python-uvloop; then
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
    servers+=(python-uvloop)
  else
    note "uvloop is not importable by $python; skipping python-uvloop"
  fi
fi
if (( ${#servers[@]} == 0 )); then
  note "no server to run"
  exit 2
fi
have_server() { local x; for x in "${servers[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }
have_server epoll || note "the epoll reference is not run: no ratios against it"
have_server uring || note "the io_uring reference is not run: no ratios against it"

server_cmd() { # NAME -> the command, one word a line
  case $1 in
    epoll) printf '%s\n' "$epoll_bin" 0 ;;
    uring | uring-*) printf '%s\n' "$uring_bin" 0 ;;
    cpp | cpp-epoll | cpp-uring) printf '%s\n' "$cpp_bin" 0 ;;
    python-asyncio) printf '%s\n' "$python" "$peer" 0 --loop asyncio ;;
    python-uvloop) printf '%s\n' "$python" "$peer" 0 --loop uvloop ;;
  esac
}

tmp_dir=$(mktemp -d "${TMPDIR:-/tmp}/echo_bench.XXXXXX")
# The server and the load generator are children of this shell (never of a $(...) subshell), so
# that the traps below can stop them; both are waited for with `wait`, which a signal interrupts.
srv_pid=
load_pid=
stop_server() {
  if [[ -n $srv_pid ]]; then
    kill "$srv_pid" 2>/dev/null
    wait "$srv_pid" 2>/dev/null
    srv_pid=
  fi
}
cleanup() {
  if [[ -n $load_pid ]]; then
    kill "$load_pid" 2>/dev/null
    wait "$load_pid" 2>/dev/null
    load_pid=
  fi
  stop_server
  rm -rf -- "$tmp_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts server NAME pinned to its core; sets srv_pid and srv_port. Fails if it does not print
# "serving on 127.0.0.1:PORT" within 10 s.
start_server() {
  local name=$1 i line
  local -a cmd
  local -a backend=()
  mapfile -t cmd < <(server_cmd "$name")
  # Our server's backend; every other server runs without the variable.
  case $name in
    cpp-epoll) backend=(ASYNCIO_BACKEND=epoll) ;;
    cpp-uring) backend=(ASYNCIO_BACKEND=io_uring) ;;
    uring-sendsys) backend=(URING_ECHO_SEND_SYSCALL=1) ;;
    uring-1shot) backend=(URING_ECHO_SINGLESHOT=1) ;;
    uring-both) backend=(URING_ECHO_SEND_SYSCALL=1 URING_ECHO_SINGLESHOT=1) ;;
  esac
  : >"$tmp_dir/server.out"
  : >"$tmp_dir/server.err"
  env -u PYTHONASYNCIODEBUG -u PYTHONDEVMODE -u ASYNCIO_BACKEND -u URING_ECHO_SEND_SYSCALL \
    -u URING_ECHO_SINGLESHOT -u URING_ECHO_BUFS -u URING_ECHO_BUF_SIZE "${backend[@]}" "${pin_server[@]}" "${cmd[@]}" \
    >"$tmp_dir/server.out" 2>"$tmp_dir/server.err" </dev/null &
  srv_pid=$!
  srv_port=
  for (( i = 0; i < 200; i++ )); do
    line=$(grep -m1 '^serving on 127\.0\.0\.1:[0-9][0-9]*$' "$tmp_dir/server.out")
    if [[ -n $line ]]; then
      srv_port=${line##*:}
      return 0
    fi
    if ! kill -0 "$srv_pid" 2>/dev/null; then
      break
    fi
    sleep 0.05
  done
  note "server $name did not start (${cmd[*]}); stderr: $(tail -c 2000 "$tmp_dir/server.err")"
  stop_server
  return 1
}

field() { # NAME LINE -> value of NAME=...
  sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p; s/^$1=\([^[:space:]]*\).*/\1/p" <<<"$2" | head -n1
}

# One run; sets `result` to "msgs_per_s p50_us p99_us server_cpu_s msgs_per_cpu_s byte_errors"
# (a failed run that still printed its line: "- - - - - byte_errors"; else empty). Status 0 when
# the run succeeded.
run_once() {
  local name=$1 conns=$2 size=$3 rc line
  result=
  start_server "$name" || return 1
  "${pin_load[@]}" "$load_bin" --host 127.0.0.1 --port "$srv_port" --conns "$conns" \
    --size "$size" --duration "$duration" --warmup "$warmup" --server-pid "$srv_pid" \
    --timeout 60 >"$tmp_dir/load.out" </dev/null &
  load_pid=$!
  wait "$load_pid"
  rc=$?
  load_pid=
  local alive=1
  kill -0 "$srv_pid" 2>/dev/null || alive=0
  stop_server
  line=$(grep -m1 '^conns=' "$tmp_dir/load.out")
  if [[ -z $line ]]; then
    note "no result line from echo_load against $name (status $rc)"
    return 1
  fi
  (( alive )) || note "server $name died during the run; stderr: $(tail -c 2000 "$tmp_dir/server.err")"
  local want_backend=
  case $name in cpp-epoll) want_backend=epoll ;; cpp-uring) want_backend=io_uring ;; esac
  if [[ -n $want_backend ]] && ! grep -q "^bench_echo_server: backend $want_backend\$" "$tmp_dir/server.err"; then
    note "server $name did not say it runs on $want_backend; stderr: $(tail -c 500 "$tmp_dir/server.err")"
    return 1
  fi
  local mps p50 p99 cpu msgs berr cerr
  msgs=$(field msgs "$line")
  mps=$(field msgs_per_s "$line")
  p50=$(field p50_us "$line")
  p99=$(field p99_us "$line")
  cpu=$(field server_cpu_s "$line")
  berr=$(field byte_errors "$line")
  cerr=$(field conn_errors "$line")
  if [[ -z $msgs || -z $mps || -z $p50 || -z $p99 || -z $cpu || -z $berr || -z $cerr ]]; then
    note "malformed result line against $name: $line"
    return 1
  fi
  if (( rc != 0 || cerr != 0 || !alive )); then
    note "FAILED run against $name ($conns conns x $size B): $line"
    # Byte errors are still counted; other figures of a failed run are not used.
    result="- - - - - $berr"
    return 1
  fi
  local mpc
  mpc=$(awk -v m="$msgs" -v c="$cpu" 'BEGIN { if (c + 0 > 0) printf "%.0f", m / c; else print "-" }')
  result="$mps $p50 $p99 $cpu $mpc $berr"
}

median() { # numbers on stdin, one per line ("-" lines ignored)
  grep -v '^-$' | sort -g | awk '{ v[NR] = $1 }
    END { if (NR == 0) { print "-"; exit }
          if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
          print m }'
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null; }
load_start=$(loadavg)
note "servers: ${servers[*]}; workloads: ${workloads[*]}; DURATION=$duration WARMUP=$warmup REPEAT=$repeat"
note "server pinned: ${pin_server[*]:-no}; load generator pinned: ${pin_load[*]:-no}; load average: $load_start"

declare -A runs   # "server conns size metric" -> newline-separated values
declare -A berrs  # "server conns size" -> byte errors summed over runs
failures=0
metrics=(msgs_per_s p50_us p99_us server_cpu_s msgs_per_cpu_s)
for (( rep = 1; rep <= repeat; rep++ )); do
  for w in "${workloads[@]}"; do
    conns=${w%x*}
    size=${w#*x}
    # Interleave servers so that slow drift of the machine hits all alike.
    for s in "${servers[@]}"; do
      note "server=$s conns=$conns size=$size run $rep/$repeat"
      run_once "$s" "$conns" "$size" || failures=$(( failures + 1 ))
      [[ -n $result ]] || continue
      read -r -a v <<<"$result"
      note "  msgs_per_s=${v[0]} p50_us=${v[1]} p99_us=${v[2]} server_cpu_s=${v[3]} msgs_per_cpu_s=${v[4]} byte_errors=${v[5]}"
      for i in "${!metrics[@]}"; do
        runs["$s $conns $size ${metrics[$i]}"]+="${v[$i]}"$'\n'
      done
      berrs["$s $conns $size"]=$(( ${berrs["$s $conns $size"]:-0} + v[5] ))
    done
  done
done
load_end=$(loadavg)
note "load average at the end: $load_end"

# ---------------------------------------------------------------- results
declare -A med
fmt() { # METRIC VALUE
  [[ $2 == - ]] && { printf '%s' -; return; }
  case $1 in
    msgs_per_s | msgs_per_cpu_s) awk -v x="$2" 'BEGIN { printf "%.0f", x }' ;;
    server_cpu_s) awk -v x="$2" 'BEGIN { printf "%.2f", x }' ;;
    *) awk -v x="$2" 'BEGIN { printf "%.1f", x }' ;;
  esac
}
for w in "${workloads[@]}"; do
  conns=${w%x*}
  size=${w#*x}
  for s in "${servers[@]}"; do
    [[ -n ${berrs["$s $conns $size"]:-} ]] || continue
    line="server=$s conns=$conns size=$size"
    for m in "${metrics[@]}"; do
      med["$s $conns $size $m"]=$(fmt "$m" "$(printf '%s' "${runs["$s $conns $size $m"]:-}" | median)")
    done
    for m in msgs_per_s p50_us p99_us server_cpu_s msgs_per_cpu_s; do
      line+=" $m=${med["$s $conns $size $m"]}"
    done
    line+=" byte_errors=${berrs["$s $conns $size"]}"
    (( ${berrs["$s $conns $size"]} == 0 )) || failures=$(( failures + 1 ))
    echo "$line"
  done
done

ratio() { # NUM DEN -> two decimals, or n/a
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "" || b == "" || a == "-" || b == "-" || a + 0 <= 0 || b + 0 <= 0) { print "n/a"; exit }
    printf "%.2f\n", a / b }'
}
refs=()
have_server epoll && refs+=(epoll)
have_server uring && refs+=(uring)
for w in "${workloads[@]}"; do
  conns=${w%x*}
  size=${w#*x}
  for ref in "${refs[@]}"; do
    [[ -n ${med["$ref $conns $size msgs_per_cpu_s"]:-} ]] || continue
    for s in "${servers[@]}"; do
      [[ $s == "$ref" ]] && continue
      [[ -n ${med["$s $conns $size msgs_per_cpu_s"]:-} ]] || continue
      echo "server=$s conns=$conns size=$size ratio_vs=$ref" \
           "ratio_msgs_per_cpu_s=$(ratio "${med["$s $conns $size msgs_per_cpu_s"]}" "${med["$ref $conns $size msgs_per_cpu_s"]}")" \
           "ratio_msgs_per_s=$(ratio "${med["$s $conns $size msgs_per_s"]}" "${med["$ref $conns $size msgs_per_s"]}")" \
           "ratio_p99=$(ratio "${med["$s $conns $size p99_us"]}" "${med["$ref $conns $size p99_us"]}")"
    done
  done
done

# Issue #9's targets for our server on io_uring, messages per server CPU-second: >= 1.1x the epoll
# reference with 64-byte messages, >= 1.0x with larger ones, >= 1.0x the io_uring reference.
# Reported, never a failure: the figures are only as good as the machine is quiet.
if have_server cpp-uring; then
  for w in "${workloads[@]}"; do
    conns=${w%x*}
    size=${w#*x}
    [[ -n ${med["cpp-uring $conns $size msgs_per_cpu_s"]:-} ]] || continue
    for ref in "${refs[@]}"; do
      [[ -n ${med["$ref $conns $size msgs_per_cpu_s"]:-} ]] || continue
      need=1.00
      [[ $ref == epoll ]] && (( size <= 64 )) && need=1.10
      got=$(ratio "${med["cpp-uring $conns $size msgs_per_cpu_s"]}" "${med["$ref $conns $size msgs_per_cpu_s"]}")
      met=$(awk -v g="$got" -v n="$need" 'BEGIN { if (g == "n/a") print "n/a"; else print (g + 0 >= n + 0 ? "yes" : "no") }')
      echo "target server=cpp-uring conns=$conns size=$size vs=$ref need=$need got=$got met=$met"
    done
  done
fi

echo
hdr="| server | conns | size | msgs/s | p50 µs | p99 µs | server CPU s | msgs per server CPU-s |"
sep="|---|---:|---:|---:|---:|---:|---:|---:|"
for ref in "${refs[@]}"; do
  hdr+=" vs $ref (msgs/CPU-s) | p99 vs $ref |"
  sep+="---:|---:|"
done
echo "$hdr byte errors |"
echo "$sep---:|"
for w in "${workloads[@]}"; do
  conns=${w%x*}
  size=${w#*x}
  for s in "${servers[@]}"; do
    [[ -n ${berrs["$s $conns $size"]:-} ]] || continue
    k="$s $conns $size"
    row="| $s | $conns | $size | ${med["$k msgs_per_s"]} | ${med["$k p50_us"]} | ${med["$k p99_us"]} |"
    row+=" ${med["$k server_cpu_s"]} | ${med["$k msgs_per_cpu_s"]} |"
    for ref in "${refs[@]}"; do
      r=—
      p=—
      if [[ -n ${med["$ref $conns $size msgs_per_cpu_s"]:-} ]]; then
        r="$(ratio "${med["$k msgs_per_cpu_s"]}" "${med["$ref $conns $size msgs_per_cpu_s"]}")×"
        p="$(ratio "${med["$k p99_us"]}" "${med["$ref $conns $size p99_us"]}")×"
      fi
      row+=" $r | $p |"
    done
    echo "$row ${berrs["$k"]} |"
  done
done
echo
echo "Median of $repeat run(s) of ${duration} s (after ${warmup} s of warm-up) each; server" \
     "${pin_server[*]:-unpinned}, load generator ${pin_load[*]:-unpinned}; server CPU = utime+stime" \
     "from /proc/PID/stat over the measured window; byte errors summed over all runs." \
     "Load average at start: $load_start; at end: $load_end."

if (( failures )); then
  note "$failures run(s) or case(s) failed; see above"
  exit 1
fi
