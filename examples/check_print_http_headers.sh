#!/usr/bin/env bash
# Runs print_http_headers against local HTTP and HTTPS servers (Python's http.server; no
# internet): a self-signed certificate for localhost is made here with the openssl command and
# given to print_http_headers as its CAFILE. Also checks that without it the certificate is
# refused with Python's message. Exit 77 (skipped) without python3 or openssl.
#
# usage: check_print_http_headers.sh PRINT_HTTP_HEADERS
set -u -o pipefail
bin=$1
python=$(command -v python3) || { echo "no python3: skipped"; exit 77; }
command -v openssl >/dev/null || { echo "no openssl: skipped"; exit 77; }

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "check_print_http_headers: $*" >&2
  exit 1
}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$dir/key.pem" -out "$dir/cert.pem" \
  >/dev/null 2>&1 || fail "openssl could not make a certificate"

cat >"$dir/server.py" <<'PY'
import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(200)
        self.send_header("X-Test", sys.argv[1] + " ok")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
if sys.argv[1] == "https":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
PY

# start_server SCHEME VAR: starts the server and sets VAR to the port it listens on. (Not called
# as $(start_server ...): in a subshell its pid would not reach `pids`, and cleanup would leave
# the server running.)
start_server() {
  "$python" "$dir/server.py" "$1" "$dir/cert.pem" "$dir/key.pem" >"$dir/$1.port" 2>"$dir/$1.err" &
  pids+=($!)
  for _ in $(seq 1 200); do
    [ -s "$dir/$1.port" ] && { printf -v "$2" '%s' "$(head -1 "$dir/$1.port")"; return; }
    sleep 0.05
  done
  cat "$dir/$1.err" >&2
  fail "the $1 server did not start"
}

start_server https https_port
start_server http http_port

echo "\$ print_http_headers https://localhost:$https_port/ CERT"
out=$("$bin" "https://localhost:$https_port/" "$dir/cert.pem") || fail "https: exit status $?"
echo "$out"
grep -qx 'HTTP header> HTTP/1.0 200 OK' <<<"$out" || fail "https: no status line"
grep -qx 'HTTP header> X-Test: https ok' <<<"$out" || fail "https: no X-Test header"

echo "\$ print_http_headers http://127.0.0.1:$http_port/"
out=$("$bin" "http://127.0.0.1:$http_port/") || fail "http: exit status $?"
echo "$out"
grep -qx 'HTTP header> X-Test: http ok' <<<"$out" || fail "http: no X-Test header"

# Not trusted without the CA file (the system trust store does not have it).
echo "\$ print_http_headers https://localhost:$https_port/"
err=$("$bin" "https://localhost:$https_port/" 2>&1) && fail "an untrusted certificate was accepted"
echo "$err"
grep -q 'certificate verify failed: self-signed certificate' <<<"$err" || fail "unexpected error: $err"
echo "check_print_http_headers: OK"
