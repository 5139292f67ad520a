#!/usr/bin/env python3
"""Python peer of ``file_bench --case small``: many small files read at once with asyncio.to_thread.

Usage:
    python3 bench/peers/file_bench.py --dir DIR --n N --size S [--style ops|one] [--loop asyncio|uvloop]

N tasks are started at once; task i reads DIR/fNNNNNN (written by ``file_bench --case make-small``):

* ``--style ops`` (default): what an async file API over a thread pool does, and what
  ``asyncio::open_file`` + ``read(S)`` + ``close()`` does: three ``asyncio.to_thread`` calls,
  ``open(path, "rb", buffering=0)``, ``f.read(S)``, ``f.close()`` (aiofiles works this way);
* ``--style one``: one ``asyncio.to_thread`` call that opens, reads and closes.

A file's latency runs from its task's first step to its last. Every byte is checked against the
pattern (byte j of file i is (i * 131 + j * 7) % 251). asyncio's default executor has
min(32, cpu_count + 4) threads, as ours. Prints one line:

    case=small impl=python-to_thread-STYLE loop=L n=N size=S p50_us=X p99_us=Y max_us=Z total_s=T
        files_per_s=R errors=E

Exit status 0, or 1 when a byte differed or a read failed.
"""

import argparse
import asyncio
import time


def pattern(i, size):
    return bytes((i * 131 + j * 7) % 251 for j in range(size))


def read_whole(path, size):
    with open(path, "rb", buffering=0) as f:
        return f.read(size)


async def one_ops(path, size):
    t0 = time.perf_counter()
    f = await asyncio.to_thread(open, path, "rb", buffering=0)
    try:
        data = await asyncio.to_thread(f.read, size)
    finally:
        await asyncio.to_thread(f.close)
    return time.perf_counter() - t0, data


async def one_one(path, size):
    t0 = time.perf_counter()
    data = await asyncio.to_thread(read_whole, path, size)
    return time.perf_counter() - t0, data


async def main(args):
    one = one_ops if args.style == "ops" else one_one
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one(f"{args.dir}/f{i:06d}", args.size)) for i in range(args.n)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    total = time.perf_counter() - t0
    errors = 0
    lat = []
    patterns = [pattern(k, args.size) for k in range(251)]  # the pattern depends on i % 251 only
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            errors += args.size
            continue
        dt, data = r
        lat.append(dt * 1e6)
        expected = patterns[i % 251]
        if data != expected:
            errors += abs(len(data) - len(expected)) + sum(a != b for a, b in zip(data, expected))
    lat.sort()
    pct = (lambda q: lat[int(q * (len(lat) - 1) + 0.5)]) if lat else (lambda q: 0.0)
    print(f"case=small impl=python-to_thread-{args.style} loop={args.loop} n={args.n} size={args.size} "
          f"p50_us={pct(0.5):.0f} p99_us={pct(0.99):.0f} max_us={(lat[-1] if lat else 0):.0f} "
          f"total_s={total:.3f} files_per_s={args.n / total:.0f} errors={errors}", flush=True)
    return 0 if errors == 0 else 1


def cli():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--style", choices=("ops", "one"), default="ops")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main(args))
    return asyncio.run(main(args))


if __name__ == "__main__":
    raise SystemExit(cli())
