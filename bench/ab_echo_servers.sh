#!/usr/bin/env bash
# A/B of echo server binaries side by side: two builds of bench_echo_server (say, main's and a
# branch's, copied aside) and the references, run one after the other in each repetition so that
# the shared machine's load hits all alike; prints the median messages per server CPU-second per
# server and its ratio to the first one.
#
# Usage: bash bench/ab_echo_servers.sh LOAD_BIN SERVER_BIN...
#   e.g. bash bench/ab_echo_servers.sh build/release/bench/echo_load \
#          build/release/bench/epoll_echo_server build/release/bench/uring_echo_server \
#          /tmp/main-bench_echo_server build/release/bench/bench_echo_server
#   A SERVER_BIN may be VAR=value:path (run with that environment, e.g. ASYNCIO_BACKEND=epoll:...).
# Environment: REPS (default 3), DUR seconds (default 2), WORKLOADS (default 100x64 100x16384
#   10000x64). Server pinned to CPU 0, echo_load to CPU 1. A run that fails (server gone, a
#   connection error, a byte error) is left out of the median and counted (failed=N).
#   TLS_DIR=DIR: over TLS, with DIR/server.pem, DIR/server.key and DIR/ca.pem (as
#   run_tls_bench.sh makes them): each server gets --cert/--key, echo_load --tls --ca; the
#   servers are then TLS ones (tls_epoll_echo_server, bench_echo_server).
set -u
LOAD=$1; shift; REPS=${REPS:-3}; DUR=${DUR:-2}
srv_tls=(); load_tls=()
if [[ -n ${TLS_DIR:-} ]]; then
  srv_tls=(--cert "$TLS_DIR/server.pem" --key "$TLS_DIR/server.key"); load_tls=(--tls --ca "$TLS_DIR/ca.pem" --ciphersuites "${CIPHERSUITES:-TLS_AES_256_GCM_SHA384}")
fi
out=$(mktemp "${TMPDIR:-/tmp}/ab_echo.XXXXXX")  # (its own file: two runs at once must not mix ports)
trap 'rm -f "$out"' EXIT
for wl in ${WORKLOADS:-100x64 100x16384 10000x64}; do
  conns=${wl%x*}; size=${wl#*x}
  declare -A res=() fails=()
  for ((i=0;i<REPS;i++)); do
    for spec in "$@"; do
      envs=""; bin=$spec
      if [[ $spec == *:* ]]; then envs=${spec%%:*}; bin=${spec#*:}; fi
      env $envs taskset -c 0 $bin 0 "${srv_tls[@]}" > "$out" 2>/dev/null & pid=$!
      port=
      for j in $(seq 100); do port=$(grep -m1 -o '[0-9]*$' "$out" 2>/dev/null); [[ -n $port ]] && break; sleep 0.05; done
      line=$(taskset -c 1 $LOAD --host 127.0.0.1 --port $port --conns $conns --size $size --duration $DUR --warmup 1 --server-pid $pid --timeout 60 "${load_tls[@]}" | grep -m1 -E '^(mode=tls )?conns=')
      kill $pid; wait $pid 2>/dev/null
      msgs=$(sed -n 's/.* msgs=\([^ ]*\).*/\1/p' <<<"$line"); cpu=$(sed -n 's/.*server_cpu_s=\([^ ]*\).*/\1/p' <<<"$line")
      # A run that failed (the server died or was killed, a connection failed, a byte differed)
      # counts as failed, not as a figure.
      if [[ $line == *" byte_errors=0 conn_errors=0 "* && $msgs =~ ^[0-9]+$ && $cpu =~ ^[0-9.]+$ ]] &&
         awk -v c="$cpu" 'BEGIN{exit !(c>0)}'; then
        res[$spec]+="$(awk -v m="$msgs" -v c="$cpu" 'BEGIN{printf "%.0f", m/c}') "
      else
        fails[$spec]=$(( ${fails[$spec]:-0} + 1 ))
      fi
    done
  done
  med() { printf '%s\n' $@ | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
  first=
  for spec in "$@"; do
    m=$(med ${res[$spec]}); [[ -z $first ]] && first=$m
    envs=""; [[ $spec == *:* ]] && envs=${spec%%:*}
    echo "wl=$wl server=$(basename ${spec#*:})${envs:+[$envs]} msgs_per_cpu_s=$m ratio_vs_first=$(awk -v a=$first -v b=$m 'BEGIN{printf "%.3f", b/a}') runs=[${res[$spec]}] failed=${fails[$spec]:-0}"
  done
  unset res fails
done
echo "load: $(cat /proc/loadavg)"
