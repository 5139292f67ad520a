#!/usr/bin/env bash
# Runs the echo example end to end on loopback: starts echo_server on port 0, reads the port from
# its "serving on HOST:PORT" line, runs echo_client against it, checks both transcripts (printing
# them), and stops the server.
#
# With --tls: the server makes a self-signed certificate (echo_server --tls, which prints
# "certificate: PATH") and the client trusts only it (echo_client --cafile PATH).
#
# usage: check_echo_example.sh ECHO_SERVER ECHO_CLIENT [--tls]
set -u -o pipefail
server_bin=$1
client_bin=$2
tls=${3:-}
server_args=()
[ "$tls" = --tls ] && server_args=(--tls)

out=$(mktemp)
"$server_bin" "${server_args[@]}" 127.0.0.1 0 >"$out" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  rm -f "$out"
}
trap cleanup EXIT
fail() {
  echo "check_echo_example: $*" >&2
  echo "--- echo_server output:" >&2
  cat "$out" >&2
  exit 1
}

line=
for _ in $(seq 1 200); do
  line=$(grep -m1 '^serving on ' "$out") && break
  kill -0 "$pid" 2>/dev/null || fail "echo_server exited"
  sleep 0.05
done
[ -n "$line" ] || fail "echo_server did not print 'serving on HOST:PORT'"
hostport=${line#serving on }
host=${hostport%:*}
port=${hostport##*:}
[[ $port =~ ^[0-9]+$ ]] && [ "$port" -ne 0 ] || fail "bad port in '$line'"

client_args=()
if [ "$tls" = --tls ]; then
  cert=$(grep -m1 '^certificate: ' "$out") || fail "echo_server --tls did not print 'certificate: PATH'"
  cert=${cert#certificate: }
  [ -f "$cert" ] || fail "no certificate at $cert"
  client_args=(--cafile "$cert")
  echo "\$ echo_server --tls 127.0.0.1 0"
  echo "certificate: $cert"
else
  echo "\$ echo_server 127.0.0.1 0"
fi
echo "$line"
echo "\$ echo_client ${client_args[*]} $host $port"
client_out=$("$client_bin" "${client_args[@]}" "$host" "$port") || fail "echo_client failed"
echo "$client_out"
expected_client="Send: 'Hello World!'
Received: 'Hello World!'
Close the connection"
[ "$client_out" = "$expected_client" ] || fail "unexpected echo_client output"

# The server's side of it (its output is flushed after each connection).
for _ in $(seq 1 100); do
  grep -q '^Close the connection' "$out" && break
  sleep 0.05
done
echo "--- echo_server printed:"
grep -v '^certificate: \|^serving on ' "$out"
grep -Eq "^Received 'Hello World!' from \('127\.0\.0\.1', [0-9]+\)$" "$out" || fail "no 'Received' line"
grep -q "^Send: 'Hello World!'$" "$out" || fail "no 'Send' line"
grep -q '^Close the connection$' "$out" || fail "no 'Close the connection' line"
echo "check_echo_example: OK"
