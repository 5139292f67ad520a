# Scenario 8: Lock.locked() between release() and the woken waiter's next step, and whether a task
# that calls acquire() in that window can take the lock before the waiter. (Kept as a documented
# difference: here locked() is True in that window; see docs/design.md.)
import asyncio


async def main():
    lock = asyncio.Lock()
    log = []

    async def waiter():
        async with lock:
            log.append("waiter got the lock")

    async def late():
        async with lock:
            log.append("late task got the lock")

    await lock.acquire()
    w = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter queues
    lock.release()
    log.append(f"after release(): locked()={lock.locked()}")
    t = asyncio.create_task(late())  # asks in the next iteration, before or after the waiter?
    await asyncio.gather(w, t)
    log.append(f"at the end: locked()={lock.locked()}")
    print("; ".join(log))


asyncio.run(main())

# CPython 3.13.0 prints:
#   after release(): locked()=False; waiter got the lock; late task got the lock; at the end: locked()=False
# CPython 3.11.2 (Debian's /usr/bin/python3) prints the same.
