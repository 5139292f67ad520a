#!/usr/bin/env bash
# asyncio-inspect against real processes: inspect_albums started with ASYNCIO_INSPECT=1 (ps and
# pstree list its named tasks), the same without it (nothing served, no thread), a process
# that serves nothing (sleep), and a pid that is gone.
#
# usage: check_inspect_tool.sh ASYNCIO_INSPECT_TOOL INSPECT_ALBUMS
set -u -o pipefail
tool=$1
albums=$2

out=$(mktemp)
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  rm -f "$out"
}
trap cleanup EXIT
fail() {
  echo "check_inspect_tool: $*" >&2
  exit 1
}

# Tracks of 60 s: the program is stopped by the trap long before.
ASYNCIO_INSPECT=1 "$albums" 60 >/dev/null 2>&1 &
albums_pid=$!
pids+=("$albums_pid")

# Until its four tracks are playing (bounded: 10 s).
ps_out=
for _ in $(seq 1 200); do
  kill -0 "$albums_pid" 2>/dev/null || fail "inspect_albums exited"
  if ps_out=$("$tool" ps "$albums_pid" 2>"$out") && [ "$(grep -c 'TNDNBTG\|Levitate\|DYWTYLM\|Aqua Regia' <<<"$ps_out")" -eq 4 ]; then
    break
  fi
  sleep 0.05
done
echo "\$ asyncio-inspect ps PID"
echo "$ps_out"
for name in Task-1 Sundowning TMBTE TNDNBTG Levitate DYWTYLM 'Aqua Regia'; do
  grep -q " $name " <<<"$ps_out" || fail "ps does not list '$name' ($(cat "$out"))"
done
head -1 <<<"$ps_out" | grep -q '^tid  *task id  *task name  *coroutine stack  *awaiter chain  *awaiter name  *awaiter id' \
  || fail "ps: not Python's header"

echo "\$ asyncio-inspect pstree PID"
tree_out=$("$tool" pstree "$albums_pid") || fail "pstree failed"
echo "$tree_out"
for name in Task-1 Sundowning TMBTE TNDNBTG Levitate DYWTYLM 'Aqua Regia'; do
  grep -q "(T) $name\$" <<<"$tree_out" || fail "pstree does not show '(T) $name'"
done

# The same program without the variable: no socket, and no thread started for it.
"$albums" 60 >/dev/null 2>&1 &
plain_pid=$!
pids+=("$plain_pid")
sleep 0.3
msg=$("$tool" ps "$plain_pid" 2>&1) && fail "ps of a program started without ASYNCIO_INSPECT succeeded"
echo "\$ asyncio-inspect ps PID_WITHOUT_ASYNCIO_INSPECT"
echo "$msg"
grep -q "does not serve asyncio-inspect" <<<"$msg" || fail "unexpected message without ASYNCIO_INSPECT"
# The server's thread is named (15 characters: "asyncio-inspect").
with=$(cat /proc/"$albums_pid"/task/*/comm | grep -c '^asyncio-inspect$')
without=$(cat /proc/"$plain_pid"/task/*/comm | grep -c '^asyncio-inspect$')
echo "threads named asyncio-inspect: $with with ASYNCIO_INSPECT=1, $without without"
[ "$with" -eq 1 ] && [ "$without" -eq 0 ] || fail "expected the one asyncio-inspect thread only with ASYNCIO_INSPECT=1"

# A process that is not ours.
sleep 30 &
sleep_pid=$!
pids+=("$sleep_pid")
msg=$("$tool" ps "$sleep_pid" 2>&1) && fail "ps of sleep succeeded"
echo "\$ asyncio-inspect ps SLEEP_PID"
echo "$msg"
[ "$msg" = "asyncio-inspect: process $sleep_pid does not serve asyncio-inspect: not a program linked with asyncio for C++, or not started with ASYNCIO_INSPECT=1" ] \
  || fail "unexpected message for sleep"

# A pid that is gone.
kill "$sleep_pid"
wait "$sleep_pid" 2>/dev/null
msg=$("$tool" pstree "$sleep_pid" 2>&1) && fail "pstree of a dead pid succeeded"
echo "\$ asyncio-inspect pstree DEAD_PID"
echo "$msg"
[ "$msg" = "asyncio-inspect: no such process: $sleep_pid" ] || fail "unexpected message for a dead pid"

# Bad arguments: the usage, exit status 2.
"$tool" ps >/dev/null 2>&1
[ $? -eq 2 ] || fail "no exit status 2 for a missing PID"
echo "check_inspect_tool: OK"
