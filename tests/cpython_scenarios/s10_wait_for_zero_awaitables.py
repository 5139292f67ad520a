# Scenario 10: wait_for(aw, 0) of awaitables other than a coroutine or a task (our wait_for takes
# any awaitable; in Python an Event's wait() and a Queue's get() are coroutines, a Future is
# itself). Nothing is waited for: the wait never starts, a pending future is cancelled, a done
# future gives its result without the caller yielding.
import asyncio


async def main():
    loop = asyncio.get_running_loop()
    counter = 0

    async def ticks():
        nonlocal counter
        while True:
            await asyncio.sleep(0)
            counter += 1

    ticker = asyncio.create_task(ticks())
    await asyncio.sleep(0)

    async def attempt(name, aw):
        before = counter
        try:
            out = f"returned {await asyncio.wait_for(aw, 0)!r}"
        except TimeoutError:
            out = "TimeoutError"
        print(f"{name}: {out}; the caller yielded: {counter > before}")

    ev = asyncio.Event()
    ev.set()
    await attempt("a) Event.wait() of a set event", ev.wait())
    ev = asyncio.Event()
    await attempt("b) Event.wait() of an unset event", ev.wait())
    q = asyncio.Queue()
    q.put_nowait(7)
    await attempt("c) Queue.get() of a non-empty queue", q.get())
    print(f"   queue size after: {q.qsize()}")
    fut = loop.create_future()
    await attempt("d) pending future", fut)
    print(f"   the future: cancelled()={fut.cancelled()}")
    fut = loop.create_future()
    fut.set_result(5)
    await attempt("e) done future", fut)
    ticker.cancel()


asyncio.run(main())

# CPython 3.13.0 prints:
#   a) Event.wait() of a set event: TimeoutError; the caller yielded: True
#   b) Event.wait() of an unset event: TimeoutError; the caller yielded: True
#   c) Queue.get() of a non-empty queue: TimeoutError; the caller yielded: True
#      queue size after: 1
#   d) pending future: TimeoutError; the caller yielded: True
#      the future: cancelled()=True
#   e) done future: returned 5; the caller yielded: False
# CPython 3.11.2 (Debian's /usr/bin/python3) prints the same.
