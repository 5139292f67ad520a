#!/usr/bin/env bash
# Where an echo server's time goes, per message: system calls (by name), io_uring requests
# submitted, CQEs posted, polls armed, and CPU time, counted with `perf stat` tracepoints on the
# server process while echo_load drives it (the diagnosis behind run_echo_bench.sh's figures).
#
# Usage: bash bench/count_echo_syscalls.sh [BUILD_DIR]   (default build/release; needs perf and
#        tracefs, i.e. root or perf_event_paranoid <= -1)
# Environment: SERVERS (default: epoll uring cpp-epoll cpp-uring), WORKLOADS (default: 100x64
#        100x16384 10000x64), DURATION (default 3), SERVER_CPU / LOAD_CPU (0 / 1).
#
# Output: one line per server and workload:
#   server=S conns=C size=B msgs=N syscalls_per_msg=X io_uring_enter_per_msg=.. sendto_per_msg=..
#   recvfrom_per_msg=.. read_per_msg=.. epoll_wait_per_msg=.. epoll_ctl_per_msg=.. sqes_per_msg=..
#   cqes_per_msg=.. poll_arm_per_msg=.. cpu_us_per_msg=..
# msgs counts every echo of the run: the window's, plus 2 x conns for the ramp-up's first echo and
# the drain's last one of each connection, so the ratios cover the whole time perf watched
# (accepting and closing the connections included).
set -u -o pipefail
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd -- "$script_dir/.." && pwd)
build_arg=${1:-build/release}
if [[ $build_arg == /* ]]; then bd=$build_arg; else bd=$repo_root/$build_arg; fi
duration=${DURATION:-3}
read -r -a servers <<<"${SERVERS:-epoll uring cpp-epoll cpp-uring}"
read -r -a workloads <<<"${WORKLOADS:-100x64 100x16384 10000x64}"
server_cpu=${SERVER_CPU-0}
load_cpu=${LOAD_CPU-1}
command -v perf >/dev/null || { echo "count_echo_syscalls: perf not found" >&2; exit 2; }

events=(raw_syscalls:sys_enter syscalls:sys_enter_io_uring_enter syscalls:sys_enter_sendto
        syscalls:sys_enter_recvfrom syscalls:sys_enter_read syscalls:sys_enter_write
        syscalls:sys_enter_epoll_wait syscalls:sys_enter_epoll_ctl io_uring:io_uring_submit_req
        io_uring:io_uring_complete io_uring:io_uring_poll_arm task-clock)
ev_csv=$(IFS=,; echo "${events[*]}")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/echo_count.XXXXXX")
srv=
cleanup() { [[ -n $srv ]] && kill "$srv" 2>/dev/null; rm -rf -- "$tmp"; }
trap cleanup EXIT

for w in "${workloads[@]}"; do
  conns=${w%x*}; size=${w#*x}
  for s in "${servers[@]}"; do
    envs=(-u ASYNCIO_BACKEND)
    case $s in
      epoll) cmd=("$bd/bench/epoll_echo_server" 0) ;;
      uring) cmd=("$bd/bench/uring_echo_server" 0) ;;
      cpp-epoll) cmd=("$bd/bench/bench_echo_server" 0); envs+=(ASYNCIO_BACKEND=epoll) ;;
      cpp-uring) cmd=("$bd/bench/bench_echo_server" 0); envs+=(ASYNCIO_BACKEND=io_uring) ;;
      *) echo "count_echo_syscalls: unknown server $s" >&2; exit 2 ;;
    esac
    env "${envs[@]}" taskset -c "$server_cpu" "${cmd[@]}" >"$tmp/out" 2>"$tmp/err" </dev/null &
    srv=$!
    port=
    for (( i = 0; i < 100; i++ )); do
      port=$(sed -n 's/^serving on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/out")
      [[ -n $port ]] && break
      sleep 0.05
    done
    [[ -n $port ]] || { echo "count_echo_syscalls: $s did not start: $(cat "$tmp/err")" >&2; exit 1; }
    perf stat -x, -e "$ev_csv" -p "$srv" -o "$tmp/perf" &
    perf_pid=$!
    sleep 0.3
    line=$(taskset -c "$load_cpu" "$bd/bench/echo_load" --port "$port" --conns "$conns" --size "$size" \
           --duration "$duration" --warmup 0)
    kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null
    kill "$srv"; wait "$srv" 2>/dev/null; srv=
    msgs=$(sed -n 's/.* msgs=\([0-9]*\) .*/\1/p' <<<"$line")
    berr=$(sed -n 's/.* byte_errors=\([0-9]*\) .*/\1/p' <<<"$line")
    msgs=$(( msgs + 2 * conns ))  # + the first echo of each connection (ramp-up) and its last (drain)
    out="server=$s conns=$conns size=$size msgs=$msgs byte_errors=$berr"
    for e in "${events[@]}"; do
      v=$(awk -F, -v e="$e" '$3 == e { print $1 }' "$tmp/perf")
      [[ $v =~ ^[0-9.]+$ ]] || v=0
      case $e in
        raw_syscalls:sys_enter) k=syscalls ;;
        syscalls:sys_enter_*) k=${e#syscalls:sys_enter_} ;;
        io_uring:io_uring_submit_req) k=sqes ;;
        io_uring:io_uring_complete) k=cqes ;;
        io_uring:io_uring_poll_arm) k=poll_arm ;;
        task-clock) k=cpu_us; v=$(awk -v x="$v" 'BEGIN { print x * 1000 }') ;;  # ms -> us
      esac
      out+=" ${k}_per_msg=$(awk -v a="$v" -v m="$msgs" 'BEGIN { printf (a / m < 10 ? "%.3f" : "%.1f"), a / m }')"
    done
    echo "$out"
  done
done
