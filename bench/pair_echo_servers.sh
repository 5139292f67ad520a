#!/usr/bin/env bash
# Two echo servers measured at the same time: both pinned to CPU 0, each driven by its own
# echo_load on CPU 1, so that whatever the shared machine does to the CPU's speed during a run
# hits both alike. Prints, per run, each server's messages per server CPU-second and B/A, then
# the median ratio. Where ab_echo_servers.sh (one server after the other) spreads ±10% per run on
# the 2-core VM, a run of this one against itself (A = B) stays within ±2% (see bench/README.md).
#
# Usage: bash bench/pair_echo_servers.sh LOAD_BIN SERVER_A SERVER_B
#   e.g. bash bench/pair_echo_servers.sh build/release/bench/echo_load \
#          /tmp/main-bench_echo_server build/release/bench/bench_echo_server
#   A SERVER may be VAR=value:path (run with that environment, e.g. ASYNCIO_BACKEND=epoll:...).
# Environment: REPS (default 3), DUR seconds (default 4), WL=CONNSxSIZE (default 100x64),
#   TLS_DIR=DIR: over TLS (DIR/server.pem, DIR/server.key, DIR/ca.pem as run_tls_bench.sh makes
#   them; the servers get --cert/--key, echo_load --tls --ca); with HANDSHAKES=1 too, full TLS
#   handshakes (echo_load --handshakes: connect, handshake, one echo, close) instead of messages;
#   CIPHERSUITES: the one suite offered (default TLS_AES_256_GCM_SHA384, as run_tls_bench.sh).
#   TLS_TICKETS: session tickets per handshake for OpenSSL-based servers (default 1, as
#   run_tls_bench.sh and Go's crypto/tls).
#   Exit status 1 if a run failed
#   (a server gone, a connection or byte error): no ratio is printed for it.
set -u
if (($# != 3)); then
  sed -n '2,15p' "$0" >&2
  exit 2
fi
LOAD=$1 A=$2 B=$3
REPS=${REPS:-3} DUR=${DUR:-4} WL=${WL:-100x64}
conns=${WL%x*} size=${WL#*x}
srv_tls=() load_tls=()
if [[ -n ${TLS_DIR:-} ]]; then
  srv_tls=(--cert "$TLS_DIR/server.pem" --key "$TLS_DIR/server.key") load_tls=(--tls --ca "$TLS_DIR/ca.pem" --ciphersuites "${CIPHERSUITES:-TLS_AES_256_GCM_SHA384}")
  [[ ${HANDSHAKES:-0} == 1 ]] && load_tls+=(--handshakes)
  export TLS_TICKETS=${TLS_TICKETS:-1}  # as run_tls_bench.sh: one session ticket, as Go's crypto/tls
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pair_echo.XXXXXX")
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

start() { # SPEC TAG -> starts the server; sets pid_TAG, port_TAG
  local spec=$1 tag=$2 envs="" bin=$1 port="" j
  if [[ $spec == *:* ]]; then envs=${spec%%:*} bin=${spec#*:}; fi
  env $envs taskset -c 0 "$bin" 0 "${srv_tls[@]}" >"$tmp/srv.$tag" 2>/dev/null &
  printf -v "pid_$tag" '%s' $!
  pids+=($!)
  for j in $(seq 100); do
    port=$(grep -m1 -o '[0-9]*$' "$tmp/srv.$tag" 2>/dev/null) && [[ -n $port ]] && break
    sleep 0.05
  done
  printf -v "port_$tag" '%s' "$port"
}

field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" "$2" | head -n1; }

ratios=() failed=0
for ((i = 0; i < REPS; i++)); do
  pids=()
  start "$A" a
  start "$B" b
  for t in a b; do
    pid_var=pid_$t port_var=port_$t
    taskset -c 1 "$LOAD" --host 127.0.0.1 --port "${!port_var}" --conns "$conns" --size "$size" \
      --duration "$DUR" --warmup 1 --server-pid "${!pid_var}" --timeout 60 "${load_tls[@]}" \
      >"$tmp/load.$t" 2>&1 &
    eval "lpid_$t=\$!"
  done
  wait "$lpid_a" "$lpid_b"
  kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
  line=
  for t in a b; do
    if ! grep -q ' byte_errors=0 conn_errors=0 ' "$tmp/load.$t"; then
      echo "run $((i + 1)): server ${t^^} failed: $(tail -c 300 "$tmp/load.$t")"
      line=failed
    fi
  done
  if [[ $line == failed ]]; then
    failed=$((failed + 1))
    continue
  fi
  r=$(awk -v ma="$(field msgs "$tmp/load.a")" -v ca="$(field server_cpu_s "$tmp/load.a")" \
          -v mb="$(field msgs "$tmp/load.b")" -v cb="$(field server_cpu_s "$tmp/load.b")" \
          'BEGIN{printf "a=%.0f b=%.0f ratio=%.3f", ma/ca, mb/cb, (mb/cb)/(ma/ca)}')
  echo "run $((i + 1)): wl=$WL $r"
  ratios+=("${r##*ratio=}")
done
if ((${#ratios[@]} > 0)); then
  med=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  label() { local envs=""; [[ $1 == *:* ]] && envs=${1%%:*}; printf '%s%s' "$(basename "${1#*:}")" "${envs:+[$envs]}"; }
  echo "wl=$WL A=$(label "$A") B=$(label "$B") median_ratio_b_over_a=$med runs=${#ratios[@]} failed=$failed load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
fi
((failed == 0))
