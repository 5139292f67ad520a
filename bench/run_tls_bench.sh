#!/usr/bin/env bash
# The TLS benchmark (issue #11): our streams server over TLS (start_server with an ssl Context)
# against a hand-written OpenSSL + epoll server (the reference), Python asyncio + ssl, uvloop, Go's
# crypto/tls and Boost.Asio's ssl::stream, all driven by echo_load --tls (TLS 1.3, OpenSSL).
#
# Usage: bash bench/run_tls_bench.sh [BUILD_DIR]      (default: build/release)
#
# Cases: CONNSxSIZE = echo over TLS, C connections, one S-byte message outstanding each;
# hsCONNSxSIZE = handshakes: C concurrent clients each looping connect, full handshake, one S-byte
# echo, close_notify, close (figures are then handshakes per second and per server CPU-second).
#
# Environment:
#   DURATION=S     measured window per run, seconds (default 5)
#   WARMUP=S       warm-up before each window, seconds (default 1)
#   REPEAT=R       runs per case and server; medians are reported (default 3)
#   PYTHON=path    interpreter for the Python peers (default /usr/bin/python3)
#   GO=path        Go toolchain for the Go peer (default: go on PATH)
#   SERVER_CPU=c   core the server is pinned to with taskset (default 0; empty = no pinning)
#   LOAD_CPU=c     core the load generator is pinned to (default 1; empty = no pinning)
#   SERVERS="..."  servers to run (default: openssl-epoll cpp python-asyncio python-uvloop go asio)
#   WORKLOADS="..." cases (default: 100x64 100x16384 hs50x64)
#   CIPHERSUITES=.. the one TLS 1.3 suite the load generator offers (default TLS_AES_256_GCM_SHA384:
#                  all servers then do the same work; see echo_load --ciphersuites)
#   TLS_TICKETS=N  TLS 1.3 session tickets each OpenSSL-based server sends per handshake (default 1:
#                  Go's crypto/tls sends one and has no setting for more, OpenSSL two by default;
#                  one for all, so that all do the same work; TLS_TICKETS=2 measures OpenSSL's default)
#   KTLS=1         also run the reference with SSL_OP_ENABLE_KTLS (server openssl-epoll-ktls), if
#                  the kernel offers the tls ULP (/proc/sys/net/ipv4/tcp_available_ulp)
#
# Certificates (a test CA and a server certificate for IP 127.0.0.1, ECDSA P-256) are made at
# start with the openssl command in a temporary directory, removed at exit.
# Output (stdout): one line per case and server (medians), one ratio line per case and server
# against the openssl-epoll reference, then a markdown table. Progress and notes go to stderr.
# See bench/README.md.
set -u -o pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd -- "$script_dir/.." && pwd)
peer_py="$script_dir/peers/echo_server_asyncio.py"
peer_go="$script_dir/peers/tls_echo_server_go.go"
peer_asio="$script_dir/peers/tls_echo_server_asio.cpp"

note() { printf '%s\n' "run_tls_bench: $*" >&2; }

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
ref_bin=$build_dir/bench/tls_epoll_echo_server
cpp_bin=$build_dir/bench/bench_echo_server
peer_bin_dir=$build_dir/bench/tls_peers  # the Go and Asio peers, built here by this script

is_num() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
duration=${DURATION:-5}
# One suite offered, so that every server does the same work (Go's crypto/tls would otherwise pick
# AES-128-GCM where the OpenSSL servers take the client's first choice, AES-256-GCM).
ciphersuites=${CIPHERSUITES:-TLS_AES_256_GCM_SHA384}
export TLS_TICKETS=${TLS_TICKETS:-1}  # read by the OpenSSL-based servers (ours: ssl::Context::set_num_tickets)
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
go_bin=${GO:-go}
server_cpu=${SERVER_CPU-0}
load_cpu=${LOAD_CPU-1}
all_servers=(openssl-epoll cpp python-asyncio python-uvloop go asio)
read -r -a wanted_servers <<<"${SERVERS:-${all_servers[*]}}"
read -r -a workloads <<<"${WORKLOADS:-100x64 100x16384 hs50x64}"
for w in "${workloads[@]}"; do
  if ! [[ $w =~ ^(hs)?[1-9][0-9]*x[1-9][0-9]*$ ]]; then
    note "bad workload '$w' (want CONNSxSIZE or hsCONNSxSIZE, e.g. 100x64, hs50x64)"
    exit 2
  fi
done
for s in "${wanted_servers[@]}"; do
  case $s in openssl-epoll | cpp | python-asyncio | python-uvloop | go | asio) ;;
    *) note "unknown server '$s' (known: ${all_servers[*]})"; exit 2 ;;
  esac
done

if [[ ! -x $load_bin || ! -x $ref_bin ]]; then
  cat >&2 <<EOT
run_tls_bench: benchmark binaries not found in $build_dir/bench (echo_load, tls_epoll_echo_server).
Build them first, from the repository root:
    cmake --preset release && cmake --build --preset release --target echo_load tls_epoll_echo_server bench_echo_server
(or pass the build directory that contains bench/echo_load as the first argument)
EOT
  exit 2
fi
if ! command -v openssl >/dev/null 2>&1; then
  note "the openssl command is needed to make the test certificates"
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

tmp_dir=$(mktemp -d "${TMPDIR:-/tmp}/tls_bench.XXXXXX")

# ---------------------------------------------------------------- certificates
# A throw-away CA, and a server certificate for IP 127.0.0.1 signed by it (ECDSA P-256, as a
# modern server would use). echo_load verifies the chain and the IP address.
make_certs() {
  local d=$tmp_dir
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=asyncio-bench-ca -keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1 &&
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
    -keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1 &&
  printf '%s\n' subjectAltName=IP:127.0.0.1 basicConstraints=CA:FALSE keyUsage=digitalSignature \
    extendedKeyUsage=serverAuth >"$d/ext.cnf" &&
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/ext.cnf" -out "$d/server.pem" >/dev/null 2>&1
}
if ! make_certs; then
  note "could not make the test certificates with the openssl command"
  rm -rf -- "$tmp_dir"
  exit 2
fi
cert=$tmp_dir/server.pem
key=$tmp_dir/server.key
ca=$tmp_dir/ca.pem

# ---------------------------------------------------------------- servers
have() { local x; for x in "${wanted_servers[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }
apt_install() { # PACKAGE: installs it when running as root with apt-get; status 0 on success
  [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1 || return 1
  local -a to=()
  command -v timeout >/dev/null 2>&1 && to=(timeout 600)
  export DEBIAN_FRONTEND=noninteractive
  note "trying apt-get install -y $1"
  "${to[@]}" apt-get install -y -qq "$1" >/dev/null 2>&1 && return 0
  # The package lists may be empty (fresh container): refresh once and retry.
  "${to[@]}" apt-get update -qq >/dev/null 2>&1 && "${to[@]}" apt-get install -y -qq "$1" >/dev/null 2>&1
}
newer() { [[ -x $1 && $1 -nt $2 ]]; }  # BINARY SOURCE: built and up to date

servers=()
have openssl-epoll && servers+=(openssl-epoll)
if [[ ${KTLS:-} == 1 ]]; then
  if grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
    servers+=(openssl-epoll-ktls)
  else
    note "KTLS=1 but the kernel offers no tls ULP (tcp_available_ulp: $(cat /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null)); no kTLS run"
  fi
fi
if have cpp; then
  if [[ -x $cpp_bin ]]; then servers+=(cpp); else note "$cpp_bin not found; skipping the cpp server"; fi
fi
have_python=0
if have python-asyncio || have python-uvloop; then
  if [[ -x $python ]] && [[ -f $peer_py ]]; then
    have_python=1
  else
    note "no Python peer ($python or $peer_py missing); skipping python-asyncio and python-uvloop"
  fi
fi
(( have_python )) && have python-asyncio && servers+=(python-asyncio)
if (( have_python )) && have python-uvloop; then
  "$python" -c 'import uvloop' >/dev/null 2>&1 || apt_install python3-uvloop
  if "$python" -c 'import uvloop' >/dev/null 2>&1; then
    servers+=(python-uvloop)
  else
    note "uvloop is not importable by $python; skipping python-uvloop"
  fi
fi
if have go; then
  mkdir -p "$peer_bin_dir"
  if newer "$peer_bin_dir/tls_echo_server_go" "$peer_go" ||
     { command -v "$go_bin" >/dev/null 2>&1 &&
       note "building the Go peer" &&
       (cd "$tmp_dir" && GOFLAGS=-mod=mod GOPROXY=off GO111MODULE=off CGO_ENABLED=0 GOCACHE="$peer_bin_dir/go-cache" \
          "$go_bin" build -o "$peer_bin_dir/tls_echo_server_go" "$peer_go") >&2; }; then
    servers+=(go)
  else
    note "no Go toolchain ($go_bin) or the build failed; skipping go"
  fi
fi
if have asio; then
  mkdir -p "$peer_bin_dir"
  [[ -f /usr/include/boost/asio/ssl.hpp ]] || apt_install libboost1.81-dev
  if newer "$peer_bin_dir/tls_echo_server_asio" "$peer_asio" ||
     { [[ -f /usr/include/boost/asio/ssl.hpp ]] &&
       note "building the Boost.Asio peer" &&
       ${CXX:-g++} -std=c++20 -O2 -DNDEBUG -o "$peer_bin_dir/tls_echo_server_asio" "$peer_asio" -lssl -lcrypto >&2; }; then
    servers+=(asio)
  else
    note "no Boost.Asio headers (/usr/include/boost/asio/ssl.hpp) or the build failed; skipping asio"
  fi
fi
if (( ${#servers[@]} == 0 )); then
  note "no server to run"
  rm -rf -- "$tmp_dir"
  exit 2
fi
[[ ${servers[0]} == openssl-epoll ]] || note "the openssl-epoll reference is not run: no ratios"

server_cmd() { # NAME -> the command, one word a line
  case $1 in
    openssl-epoll | openssl-epoll-ktls) printf '%s\n' "$ref_bin" 0 --cert "$cert" --key "$key" ;;
    cpp) printf '%s\n' "$cpp_bin" 0 --cert "$cert" --key "$key" ;;
    python-asyncio) printf '%s\n' "$python" "$peer_py" 0 --loop asyncio --cert "$cert" --key "$key" ;;
    python-uvloop) printf '%s\n' "$python" "$peer_py" 0 --loop uvloop --cert "$cert" --key "$key" ;;
    go) printf '%s\n' "$peer_bin_dir/tls_echo_server_go" 0 "$cert" "$key" ;;
    asio) printf '%s\n' "$peer_bin_dir/tls_echo_server_asio" 0 --cert "$cert" --key "$key" ;;
  esac
}

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
  local name=$1 i line ktls=0
  local -a cmd
  [[ $name == openssl-epoll-ktls ]] && ktls=1
  mapfile -t cmd < <(server_cmd "$name")
  : >"$tmp_dir/server.out"
  : >"$tmp_dir/server.err"
  env -u PYTHONASYNCIODEBUG -u PYTHONDEVMODE KTLS=$ktls "${pin_server[@]}" "${cmd[@]}" \
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
# the run succeeded. For a handshake case, msgs are handshakes.
run_once() {
  local name=$1 hs=$2 conns=$3 size=$4 rc line
  local -a extra=()
  (( hs )) && extra=(--handshakes)
  result=
  start_server "$name" || return 1
  "${pin_load[@]}" "$load_bin" --host 127.0.0.1 --port "$srv_port" --conns "$conns" \
    --size "$size" --duration "$duration" --warmup "$warmup" --server-pid "$srv_pid" \
    --timeout 60 --tls --ca "$ca" --ciphersuites "$ciphersuites" "${extra[@]}" >"$tmp_dir/load.out" 2>"$tmp_dir/load.err" </dev/null &
  load_pid=$!
  wait "$load_pid"
  rc=$?
  load_pid=
  local alive=1
  kill -0 "$srv_pid" 2>/dev/null || alive=0
  stop_server
  line=$(grep -m1 'conns=' "$tmp_dir/load.out")
  if [[ -z $line ]]; then
    note "no result line from echo_load against $name (status $rc): $(tail -c 1000 "$tmp_dir/load.err")"
    return 1
  fi
  (( alive )) || note "server $name died during the run; stderr: $(tail -c 2000 "$tmp_dir/server.err")"
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
    note "FAILED run against $name ($conns conns x $size B): $line; $(tail -c 1000 "$tmp_dir/load.err")"
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

case_of() { [[ $1 == hs* ]] && echo handshakes || echo echo; }
parse_w() { # WORKLOAD -> sets hs conns size
  local w=${1#hs}
  hs=0
  [[ $1 == hs* ]] && hs=1
  conns=${w%x*}
  size=${w#*x}
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null; }
load_start=$(loadavg)
note "servers: ${servers[*]}; workloads: ${workloads[*]}; DURATION=$duration WARMUP=$warmup REPEAT=$repeat"
note "server pinned: ${pin_server[*]:-no}; load generator pinned: ${pin_load[*]:-no}; load average: $load_start"

declare -A runs   # "server workload metric" -> newline-separated values
declare -A berrs  # "server workload" -> byte errors summed over runs
failures=0
metrics=(msgs_per_s p50_us p99_us server_cpu_s msgs_per_cpu_s)
for (( rep = 1; rep <= repeat; rep++ )); do
  for w in "${workloads[@]}"; do
    parse_w "$w"
    # Interleave servers so that slow drift of the machine hits all alike.
    for s in "${servers[@]}"; do
      note "server=$s case=$(case_of "$w") conns=$conns size=$size run $rep/$repeat"
      run_once "$s" "$hs" "$conns" "$size" || failures=$(( failures + 1 ))
      [[ -n $result ]] || continue
      read -r -a v <<<"$result"
      note "  msgs_per_s=${v[0]} p50_us=${v[1]} p99_us=${v[2]} server_cpu_s=${v[3]} msgs_per_cpu_s=${v[4]} byte_errors=${v[5]}"
      for i in "${!metrics[@]}"; do
        runs["$s $w ${metrics[$i]}"]+="${v[$i]}"$'\n'
      done
      berrs["$s $w"]=$(( ${berrs["$s $w"]:-0} + v[5] ))
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
  parse_w "$w"
  for s in "${servers[@]}"; do
    [[ -n ${berrs["$s $w"]:-} ]] || continue
    line="case=$(case_of "$w") server=$s conns=$conns size=$size"
    for m in "${metrics[@]}"; do
      med["$s $w $m"]=$(fmt "$m" "$(printf '%s' "${runs["$s $w $m"]:-}" | median)")
      line+=" $m=${med["$s $w $m"]}"
    done
    line+=" byte_errors=${berrs["$s $w"]}"
    (( ${berrs["$s $w"]} == 0 )) || failures=$(( failures + 1 ))
    echo "$line"
  done
done

ratio() { # NUM DEN -> two decimals, or n/a
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "" || b == "" || a == "-" || b == "-" || a + 0 <= 0 || b + 0 <= 0) { print "n/a"; exit }
    printf "%.2f\n", a / b }'
}
for w in "${workloads[@]}"; do
  parse_w "$w"
  ref=${med["openssl-epoll $w msgs_per_cpu_s"]:-}
  [[ -n $ref ]] || continue
  for s in "${servers[@]}"; do
    [[ $s == openssl-epoll ]] && continue
    [[ -n ${med["$s $w msgs_per_cpu_s"]:-} ]] || continue
    echo "case=$(case_of "$w") server=$s conns=$conns size=$size ratio_vs=openssl-epoll" \
         "ratio_msgs_per_cpu_s=$(ratio "${med["$s $w msgs_per_cpu_s"]}" "$ref")" \
         "ratio_msgs_per_s=$(ratio "${med["$s $w msgs_per_s"]}" "${med["openssl-epoll $w msgs_per_s"]}")" \
         "ratio_p99=$(ratio "${med["$s $w p99_us"]}" "${med["openssl-epoll $w p99_us"]}")"
  done
done

echo
echo "| case | server | conns | size | per s | p50 µs | p99 µs | server CPU s | per server CPU-s | vs openssl-epoll (per CPU-s) | p99 vs openssl-epoll | byte errors |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for w in "${workloads[@]}"; do
  parse_w "$w"
  for s in "${servers[@]}"; do
    [[ -n ${berrs["$s $w"]:-} ]] || continue
    k="$s $w"
    r=—
    p=—
    if [[ -n ${med["openssl-epoll $w msgs_per_cpu_s"]:-} ]]; then
      r="$(ratio "${med["$k msgs_per_cpu_s"]}" "${med["openssl-epoll $w msgs_per_cpu_s"]}")×"
      p="$(ratio "${med["$k p99_us"]}" "${med["openssl-epoll $w p99_us"]}")×"
    fi
    echo "| $(case_of "$w") | $s | $conns | $size | ${med["$k msgs_per_s"]} | ${med["$k p50_us"]} | ${med["$k p99_us"]} |" \
         "${med["$k server_cpu_s"]} | ${med["$k msgs_per_cpu_s"]} | $r | $p | ${berrs["$k"]} |"
  done
done
echo
echo "Median of $repeat run(s) of ${duration} s (after ${warmup} s of warm-up) each; TLS 1.3," \
     "ECDSA P-256 certificate; echo: messages, handshakes: full handshakes (connect, handshake," \
     "one echo, close). Server ${pin_server[*]:-unpinned}, load generator ${pin_load[*]:-unpinned};" \
     "server CPU = utime+stime from /proc/PID/stat over the measured window; byte errors summed" \
     "over all runs. Load average at start: $load_start; at end: $load_end."

if (( failures )); then
  note "$failures run(s) or case(s) failed; see above"
  exit 1
fi
