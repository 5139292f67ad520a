#!/usr/bin/env python3
"""Python peer of the C++ ``core_bench`` binary.

Runs one workload per process and prints exactly one line on stdout:

    case=NAME n=N ns_per_op=X bytes_per_task=Y

The same workloads are run by ``build/<preset>/bench/core_bench``; see
bench/README.md for how the two are compared (bench/run_core_bench.sh).

Usage:
    python3 bench/peers/core_bench.py --case NAME [--n N] [--loop asyncio|uvloop]

Cases (default n in brackets):

spawn [1,000,000]
    Inside one running loop: create n tasks with ``loop.create_task`` of a
    coroutine that returns its index, ``await asyncio.gather(*tasks)``, and
    check that the results sum to n*(n-1)/2.  ns_per_op = wall time / n.

sleepers [1,000,000]
    n tasks that each ``await asyncio.sleep(0.1)``, all alive at once,
    gathered.  ns_per_op = (wall time - 100 ms) / n.

pingpong [1,000,000]
    Two tasks hand an int back and forth n times; one round trip is
    A -> B -> A and B adds one, so the final value must be n.
    Hand-off primitive: a bare ``asyncio.Future`` per hop.  Each message
    carries the future the receiver must answer on, so every hop is exactly
    one ``loop.create_future()``, one ``set_result`` and one task wake-up.
    This is the lightest hand-off asyncio offers: ``asyncio.Event`` and
    ``asyncio.Queue`` are built on top of futures and add a waiter deque and
    extra bookkeeping per hop.  ns_per_op = wall time / n round trips.

generator_send [10,000,000]
    n ``send()`` calls into a consumer generator
    (``while True: v = yield r; r = v + 1``), each sending back the previous
    answer, so the last answer must be n.  No event loop is involved, so
    ``--loop`` is accepted and ignored; the runner only runs this case once,
    reported as python-asyncio.  ns_per_op = wall time / n sends.

timer_cancel [1,000,000]
    Inside a running loop: create n ``loop.call_later(10, cb)`` handles, then
    ``cancel()`` them all.  ns_per_op = wall time of both phases / n.  The
    callbacks never run (checked).  Note that asyncio's selector loop removes
    cancelled handles from its heap lazily, on the next loop iteration; that
    purge happens after the measurement and is not counted.

future_roundtrip [1,000,000]
    A client and a server task; per round trip the server makes a fresh
    future for the request and awaits it, the client makes one for the reply,
    sets the request and awaits the reply.  ns_per_op = wall time / n round
    trips.

threadsafe_post [1,000,000] and threadsafe_post2 [1,000,000]
    One (threadsafe_post) or two (threadsafe_post2) threads post n callbacks
    in all with ``loop.call_soon_threadsafe`` to a loop that has nothing else
    to do; the last callback to run ends the case.  ns_per_op = wall time
    from the producers' start to the last callback / n posts.

bytes_per_task is (peak RSS during the case - RSS just before it) / n, with
the peak read from ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (KiB) and
the baseline from /proc/self/statm.  It is reported for the cases where n
objects are alive at once (spawn, sleepers, timer_cancel: bytes per task or
per timer handle) and is 0 for pingpong and generator_send.

The interpreter is used as a Python programmer would run it: default
settings, cyclic GC enabled, asyncio debug mode off.  ``--no-gc`` switches
the cyclic GC off for diagnosis (it costs a large share of spawn/sleepers,
whose n live tasks trigger many collections); the runner does not use it.  Timings use
time.perf_counter_ns and start inside the already-running loop, so loop
creation and teardown are not counted.
"""

import argparse
import asyncio
import gc
import os
import resource
import sys
import threading
import time

DEFAULT_N = {
    "spawn": 1_000_000,
    "sleepers": 1_000_000,
    "pingpong": 1_000_000,
    "generator_send": 10_000_000,
    "timer_cancel": 1_000_000,
    "wait_for_ready": 1_000_000,
    "taskgroup": 1_000_000,
    "queue_pingpong": 1_000_000,
    "lock_handoff": 1_000_000,
    "lock_uncontended": 10_000_000,
    "threadsafe_post": 1_000_000,
    "threadsafe_post2": 1_000_000,
    "future_roundtrip": 1_000_000,
}

SLEEP_S = 0.1
SLEEP_NS = 100_000_000

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class BenchError(Exception):
    """A workload produced a wrong result."""


def current_rss_bytes():
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE_SIZE


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Result:
    __slots__ = ("elapsed_ns", "rss_before", "rss_peak")

    def __init__(self, elapsed_ns, rss_before=None, rss_peak=None):
        self.elapsed_ns = elapsed_ns
        self.rss_before = rss_before
        self.rss_peak = rss_peak


# --------------------------------------------------------------------------
# spawn


async def _spawn_job(i):
    return i


async def case_spawn(n):
    loop = asyncio.get_running_loop()
    job = _spawn_job
    create_task = loop.create_task
    rss_before = current_rss_bytes()
    t0 = time.perf_counter_ns()
    tasks = [create_task(job(i)) for i in range(n)]
    results = await asyncio.gather(*tasks)
    total = sum(results)
    t1 = time.perf_counter_ns()
    rss_peak = peak_rss_bytes()
    if total != n * (n - 1) // 2:
        raise BenchError(f"spawn: sum {total} != {n * (n - 1) // 2}")
    return Result(t1 - t0, rss_before, rss_peak)


# --------------------------------------------------------------------------
# sleepers


async def _sleeper(i):
    await asyncio.sleep(SLEEP_S)
    return i


async def case_sleepers(n):
    loop = asyncio.get_running_loop()
    job = _sleeper
    create_task = loop.create_task
    rss_before = current_rss_bytes()
    t0 = time.perf_counter_ns()
    tasks = [create_task(job(i)) for i in range(n)]
    results = await asyncio.gather(*tasks)
    t1 = time.perf_counter_ns()
    rss_peak = peak_rss_bytes()
    if len(results) != n or sum(results) != n * (n - 1) // 2:
        raise BenchError("sleepers: wrong results")
    if t1 - t0 < SLEEP_NS:
        raise BenchError("sleepers: finished before the sleep elapsed")
    return Result(t1 - t0 - SLEEP_NS, rss_before, rss_peak)


# --------------------------------------------------------------------------
# pingpong
#
# Message = (value, future to answer on).  A sends (x, reply) into B's inbox
# future; B answers with (x + 1, its next inbox) on `reply`.


async def _pong(inbox_handoff):
    loop = asyncio.get_running_loop()
    create_future = loop.create_future
    inbox = create_future()
    inbox_handoff.set_result(inbox)
    while True:
        msg = await inbox
        if msg is None:
            return
        x, reply = msg
        inbox = create_future()
        reply.set_result((x + 1, inbox))


async def case_pingpong(n):
    loop = asyncio.get_running_loop()
    create_future = loop.create_future
    handoff = create_future()
    pong = loop.create_task(_pong(handoff))
    to_b = await handoff  # B is running and waiting on its first inbox
    x = 0
    t0 = time.perf_counter_ns()
    for _ in range(n):
        reply = create_future()
        to_b.set_result((x, reply))
        x, to_b = await reply
    t1 = time.perf_counter_ns()
    to_b.set_result(None)
    await pong
    if x != n:
        raise BenchError(f"pingpong: final value {x} != {n}")
    return Result(t1 - t0)


# --------------------------------------------------------------------------
# generator_send


def _consumer():
    r = 0
    while True:
        v = yield r
        r = v + 1


def case_generator_send(n):
    gen = _consumer()
    next(gen)
    send = gen.send
    v = 0
    t0 = time.perf_counter_ns()
    for _ in range(n):
        v = send(v)
    t1 = time.perf_counter_ns()
    gen.close()
    if v != n:
        raise BenchError(f"generator_send: final value {v} != {n}")
    return Result(t1 - t0)


# --------------------------------------------------------------------------
# timer_cancel


async def case_timer_cancel(n):
    loop = asyncio.get_running_loop()
    fired = [0]

    def cb():
        fired[0] += 1

    call_later = loop.call_later
    rss_before = current_rss_bytes()
    t0 = time.perf_counter_ns()
    handles = [call_later(10, cb) for _ in range(n)]
    for h in handles:
        h.cancel()
    t1 = time.perf_counter_ns()
    rss_peak = peak_rss_bytes()
    if not all(h.cancelled() for h in handles):
        raise BenchError("timer_cancel: a handle is not cancelled")
    del handles
    await asyncio.sleep(0)  # let the loop purge its heap once
    if fired[0]:
        raise BenchError("timer_cancel: a cancelled callback ran")
    return Result(t1 - t0, rss_before, rss_peak)


# --------------------------------------------------------------------------
# wait_for_ready: wait_for around a coroutine whose value is ready at once


async def _ready_value(i):
    return i


async def case_wait_for_ready(n):
    wait_for = asyncio.wait_for
    job = _ready_value
    t0 = time.perf_counter_ns()
    total = 0
    for i in range(n):
        total += await wait_for(job(i), 1)
    t1 = time.perf_counter_ns()
    if total != n * (n - 1) // 2:
        raise BenchError("wait_for_ready: wrong sum")
    return Result(t1 - t0)


# --------------------------------------------------------------------------
# taskgroup: n tasks in one TaskGroup


async def case_taskgroup(n):
    total = [0]

    async def add(i):
        total[0] += i

    rss_before = current_rss_bytes()
    t0 = time.perf_counter_ns()
    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(add(i))
    t1 = time.perf_counter_ns()
    rss_peak = peak_rss_bytes()
    if total[0] != n * (n - 1) // 2:
        raise BenchError("taskgroup: wrong sum")
    return Result(t1 - t0, rss_before, rss_peak)


# --------------------------------------------------------------------------
# queue_pingpong: two tasks hand an int back and forth through two asyncio.Queues


async def case_queue_pingpong(n):
    to_a, to_b = asyncio.Queue(), asyncio.Queue()

    async def ping():
        v = 0
        for _ in range(n):
            await to_b.put(v + 1)
            v = await to_a.get()
        return v

    async def pong():
        for _ in range(n):
            v = await to_b.get()
            await to_a.put(v + 1)

    t0 = time.perf_counter_ns()
    v, _ = await asyncio.gather(ping(), pong())
    t1 = time.perf_counter_ns()
    if v != 2 * n:
        raise BenchError("queue_pingpong: wrong value")
    return Result(t1 - t0)


# --------------------------------------------------------------------------
# future_roundtrip: a request and a reply through two fresh futures per round trip


async def case_future_roundtrip(n):
    loop = asyncio.get_running_loop()
    state = {"request": None, "reply": None}

    async def server():
        for _ in range(n):
            state["request"] = request = loop.create_future()
            v = await request
            state["reply"].set_result(v + 1)

    async def client():
        v = 0
        for _ in range(n):
            state["reply"] = reply = loop.create_future()
            state["request"].set_result(v)
            v = await reply
        return v

    t0 = time.perf_counter_ns()
    _, v = await asyncio.gather(server(), client())
    t1 = time.perf_counter_ns()
    if v != n:
        raise BenchError("future_roundtrip: wrong value")
    return Result(t1 - t0)


# --------------------------------------------------------------------------
# lock_handoff: two tasks take turns on one Lock, holding it across a yield


async def case_lock_handoff(n):
    lock = asyncio.Lock()
    turns = [0]

    async def worker(k):
        for _ in range(k):
            async with lock:
                turns[0] += 1
                await asyncio.sleep(0)

    t0 = time.perf_counter_ns()
    await asyncio.gather(worker(n // 2), worker(n // 2))
    t1 = time.perf_counter_ns()
    if turns[0] != n // 2 * 2:
        raise BenchError("lock_handoff: wrong count")
    return Result(t1 - t0)


# lock_uncontended: acquire + release with nobody else


async def case_lock_uncontended(n):
    lock = asyncio.Lock()
    acquire, release = lock.acquire, lock.release
    t0 = time.perf_counter_ns()
    for _ in range(n):
        await acquire()
        release()
    t1 = time.perf_counter_ns()
    return Result(t1 - t0)


# --------------------------------------------------------------------------
# threadsafe_post(2): n callbacks posted with call_soon_threadsafe from 1 (2) threads


async def _threadsafe_post(n, producers):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    per = n // producers
    total = per * producers
    ran = [0]

    def cb():
        ran[0] += 1
        if ran[0] == total:
            done.set_result(None)

    def produce():
        post = loop.call_soon_threadsafe
        for _ in range(per):
            post(cb)

    threads = [threading.Thread(target=produce) for _ in range(producers)]
    t0 = time.perf_counter_ns()
    for t in threads:
        t.start()
    await done
    t1 = time.perf_counter_ns()
    for t in threads:
        t.join()
    if ran[0] != total:
        raise BenchError("threadsafe_post: wrong count")
    return Result(t1 - t0)


async def case_threadsafe_post(n):
    return await _threadsafe_post(n, 1)


async def case_threadsafe_post2(n):
    return await _threadsafe_post(n, 2)


# --------------------------------------------------------------------------

ASYNC_CASES = {
    "future_roundtrip": case_future_roundtrip,
    "threadsafe_post": case_threadsafe_post,
    "threadsafe_post2": case_threadsafe_post2,
    "queue_pingpong": case_queue_pingpong,
    "lock_handoff": case_lock_handoff,
    "lock_uncontended": case_lock_uncontended,
    "wait_for_ready": case_wait_for_ready,
    "taskgroup": case_taskgroup,
    "spawn": case_spawn,
    "sleepers": case_sleepers,
    "pingpong": case_pingpong,
    "timer_cancel": case_timer_cancel,
}
SYNC_CASES = {
    "generator_send": case_generator_send,
}


def loop_factory(name):
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        print("core_bench.py: uvloop is not installed", file=sys.stderr)
        sys.exit(3)
    return uvloop.new_event_loop


def run_async(coro_fn, n, loop_name):
    factory = loop_factory(loop_name)
    if hasattr(asyncio, "Runner"):  # Python >= 3.11
        with asyncio.Runner(debug=False, loop_factory=factory) as runner:
            return runner.run(coro_fn(n))
    loop = factory()
    try:
        loop.set_debug(False)
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro_fn(n))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", required=True, choices=sorted(DEFAULT_N))
    parser.add_argument("--n", type=int, default=None,
                        help="number of operations (default: per case)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"),
                        default="asyncio")
    parser.add_argument("--no-gc", action="store_true",
                        help="disable the cyclic GC (diagnostic only; the "
                             "runner measures with the default, GC on)")
    args = parser.parse_args(argv)
    n = DEFAULT_N[args.case] if args.n is None else args.n
    if n <= 0:
        parser.error("--n must be positive")
    if args.no_gc:
        gc.disable()

    try:
        if args.case in SYNC_CASES:
            res = SYNC_CASES[args.case](n)
        else:
            res = run_async(ASYNC_CASES[args.case], n, args.loop)
    except BenchError as e:
        print(f"core_bench.py: CHECK FAILED: {e}", file=sys.stderr)
        return 1

    bytes_per_task = 0
    if res.rss_before is not None:
        bytes_per_task = max(0, res.rss_peak - res.rss_before) // n
    print(f"case={args.case} n={n} ns_per_op={res.elapsed_ns / n:.1f} "
          f"bytes_per_task={bytes_per_task}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
