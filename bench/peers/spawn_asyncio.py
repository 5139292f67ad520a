"""Spawn-and-wait peer of bench/spawn_bench.cpp: N children of PROGRAM, at most P at once,
with asyncio.create_subprocess_exec + wait() in P tasks (asyncio's or uvloop's loop).

    python3 spawn_asyncio.py --n N --parallel P [--program /bin/true] [--loop asyncio|uvloop]
"""
import argparse
import asyncio
import time


async def worker(program, count):
    for _ in range(count):
        p = await asyncio.create_subprocess_exec(program)
        if await p.wait() != 0:
            raise SystemExit("child failed")


async def main(program, n, parallel):
    await asyncio.gather(*(worker(program, n // parallel + (1 if w < n % parallel else 0))
                           for w in range(parallel)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--program", default="/bin/true")
    ap.add_argument("--loop", default="asyncio")
    a = ap.parse_args()
    if a.loop == "uvloop":
        import uvloop  # (0.17 has no uvloop.run)
        uvloop.install()
    run = asyncio.run
    t0 = time.perf_counter()
    run(main(a.program, a.n, a.parallel))
    s = time.perf_counter() - t0
    print(f"case=spawn impl=python-{a.loop} parallel={a.parallel} n={a.n} seconds={s:.3f} per_s={a.n / s:.1f}")
