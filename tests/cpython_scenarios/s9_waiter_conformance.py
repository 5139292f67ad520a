# Scenario 9: two cases of tests/waiter_conformance_test.cpp, for every waitable it covers.
# a) The task cancels itself, schedules a callback, then waits where it must suspend: the wait
#    raises CancelledError one iteration later (after the callback), and leaves nothing behind
#    (the waiter that was already there gets the next wake-up).
# b) sleep: waiters sleep 1s, then the test task sleeps 1s (the "wake" is the time passing) and
#    cancels the first waiter: it has already run (its timer fired first), so it completed.
import asyncio


class P:
    pass


async def pending_cancel(name, make, prepare, wait, wake):
    p = make()
    await prepare(p)
    out = []

    async def real():
        await wait(p)
        out.append("the waiter already there completed")

    r = asyncio.create_task(real())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    log = []
    asyncio.get_running_loop().call_soon(lambda: log.append("callback"))
    asyncio.current_task().cancel()
    try:
        await wait(p)
        log.append("returned")
    except asyncio.CancelledError:
        log.append("CancelledError")
    asyncio.current_task().uncancel()
    for _ in range(5):
        if r.done():
            break
        await wake(p)
        for _ in range(3):
            await asyncio.sleep(0)
    print(f"a) {name}: " + "; ".join(log + out))


async def main():
    async def nothing(p):
        pass

    def event():
        p = P()
        p.e = asyncio.Event()
        return p

    async def event_wait(p):
        await p.e.wait()

    async def event_set(p):
        p.e.set()

    await pending_cancel("Event.wait", event, nothing, event_wait, event_set)

    def lock():
        p = P()
        p.l = asyncio.Lock()
        return p

    async def lock_take(p):
        await p.l.acquire()

    async def lock_release(p):
        p.l.release()

    await pending_cancel("Lock.acquire", lock, lock_take, lock_take, lock_release)

    def sem():
        p = P()
        p.s = asyncio.Semaphore(0)
        return p

    async def sem_acquire(p):
        await p.s.acquire()

    async def sem_release(p):
        p.s.release()

    await pending_cancel("Semaphore.acquire", sem, nothing, sem_acquire, sem_release)

    def bsem():
        p = P()
        p.s = asyncio.BoundedSemaphore(1)
        return p

    await pending_cancel("BoundedSemaphore.acquire", bsem, sem_acquire, sem_acquire, sem_release)

    def cond():
        p = P()
        p.c = asyncio.Condition()
        return p

    async def cond_wait(p):
        async with p.c:
            await p.c.wait()

    async def cond_notify(p):
        async with p.c:
            p.c.notify(1)

    await pending_cancel("Condition.wait", cond, nothing, cond_wait, cond_notify)

    def barrier():
        p = P()
        p.b = asyncio.Barrier(3)
        return p

    async def barrier_wait(p):
        await p.b.wait()

    async def barrier_complete(p):
        missing = p.b.parties - p.b.n_waiting - 1
        for _ in range(missing):
            asyncio.create_task(p.b.wait())
        if missing:
            await asyncio.sleep(0)
        await p.b.wait()

    await pending_cancel("Barrier.wait", barrier, nothing, barrier_wait, barrier_complete)

    def queue():
        p = P()
        p.q = asyncio.Queue()
        return p

    async def get(p):
        await p.q.get()

    async def put_one(p):
        p.q.put_nowait(1)

    await pending_cancel("Queue.get", queue, nothing, get, put_one)

    def full_queue():
        p = P()
        p.q = asyncio.Queue(1)
        return p

    async def fill(p):
        p.q.put_nowait(0)

    async def put(p):
        await p.q.put(1)

    async def get_one(p):
        p.q.get_nowait()

    await pending_cancel("Queue.put (full)", full_queue, fill, put, get_one)

    async def unfinished(p):
        p.q.put_nowait(1)
        p.q.get_nowait()

    async def join(p):
        await p.q.join()

    async def task_done(p):
        p.q.task_done()

    await pending_cancel("Queue.join", queue, unfinished, join, task_done)

    async def sleep_1s(p):
        await asyncio.sleep(1)

    await pending_cancel("sleep", P, nothing, sleep_1s, sleep_1s)

    # b)
    outcome = ["pending", "pending"]

    async def one(i):
        try:
            await asyncio.sleep(1)
            outcome[i] = "completed"
        except asyncio.CancelledError:
            outcome[i] = "cancelled"
            raise

    tasks = []
    for i in range(2):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    await asyncio.sleep(1)
    cancelled = tasks[0].cancel()
    for _ in range(3):
        await asyncio.sleep(0)
    print(f"b) sleep, cancelled by the task that slept as long: cancel() -> {cancelled}; {outcome}")


asyncio.run(main())

# CPython 3.13.0 prints:
#   a) Event.wait: callback; CancelledError; the waiter already there completed
#   a) Lock.acquire: callback; CancelledError; the waiter already there completed
#   a) Semaphore.acquire: callback; CancelledError; the waiter already there completed
#   a) BoundedSemaphore.acquire: callback; CancelledError; the waiter already there completed
#   a) Condition.wait: callback; CancelledError; the waiter already there completed
#   a) Barrier.wait: callback; CancelledError; the waiter already there completed
#   a) Queue.get: callback; CancelledError; the waiter already there completed
#   a) Queue.put (full): callback; CancelledError; the waiter already there completed
#   a) Queue.join: callback; CancelledError; the waiter already there completed
#   a) sleep: callback; CancelledError; the waiter already there completed
#   b) sleep, cancelled by the task that slept as long: cancel() -> False; ['completed', 'completed']
# CPython 3.11.2 (Debian's /usr/bin/python3) prints the same.
