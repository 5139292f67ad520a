# Scenario 5: wait_for(aw, 0) (a timeout <= 0) when
#  a) aw is a task that is already done,
#  b) aw is a coroutine that would complete without suspending (does its body run at all?),
#  c) aw is a coroutine that would suspend,
#  d) aw is a pending task (it is cancelled; and if it catches the cancellation and returns?),
#  e) aw is a coroutine getting from a non-empty Queue (is the item taken?),
# and whether the caller yields to the loop.
import asyncio


async def main():
    loop = asyncio.get_running_loop()
    log = []

    async def sync_body():
        log.append("sync body ran")
        return "sync"

    async def suspending_body():
        log.append("suspending body ran")
        await asyncio.sleep(1)
        return "slept"

    async def stubborn():
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            return "caught and returned"

    async def ticks():
        n = 0
        while True:
            await asyncio.sleep(0)
            n += 1
            counter[0] = n

    counter = [0]
    ticker = asyncio.create_task(ticks())
    await asyncio.sleep(0)

    async def attempt(name, make):
        log.clear()
        aw = make()
        before = counter[0]
        try:
            r = await asyncio.wait_for(aw, 0)
            out = f"returned {r!r}"
        except TimeoutError:
            out = "TimeoutError"
        print(f"{name}: {out}; {'; '.join(log) or 'no body ran here'}; "
              f"the caller yielded: {counter[0] > before}")
        return aw

    done_task = asyncio.create_task(sync_body())
    await asyncio.sleep(0)
    await attempt("a) done task", lambda: done_task)
    await attempt("b) coroutine that completes at once", sync_body)
    await attempt("c) coroutine that would suspend", suspending_body)
    t = asyncio.create_task(suspending_body())
    await asyncio.sleep(0)
    await attempt("d) pending task", lambda: t)
    print(f"   the task: cancelled()={t.cancelled()}")
    t = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await attempt("d2) pending task that catches the cancellation and returns", lambda: t)
    q = asyncio.Queue()
    q.put_nowait("item")
    await attempt("e) queue.get() on a non-empty queue", q.get)
    print(f"   queue size after: {q.qsize()}")
    ticker.cancel()


asyncio.run(main())

# CPython 3.13.0 prints:
#   a) done task: returned 'sync'; no body ran here; the caller yielded: False
#   b) coroutine that completes at once: TimeoutError; no body ran here; the caller yielded: True
#   c) coroutine that would suspend: TimeoutError; no body ran here; the caller yielded: True
#   d) pending task: TimeoutError; no body ran here; the caller yielded: True
#      the task: cancelled()=True
#   d2) pending task that catches the cancellation and returns: returned 'caught and returned'; no body ran here; the caller yielded: True
#   e) queue.get() on a non-empty queue: TimeoutError; no body ran here; the caller yielded: True
#      queue size after: 1
# CPython 3.11.2 (Debian's /usr/bin/python3) prints the same.
