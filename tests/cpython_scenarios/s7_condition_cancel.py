# Scenario 7: a cancelled Condition waiter.
#  a) cancelled while waiting for notify() (the lock is held by someone else at that moment):
#     does it re-acquire the lock before CancelledError comes out? Is another waiter woken?
#  b) notified, then cancelled before it re-acquired the lock: lock re-acquired before raising?
#     is the notification passed on to the next waiter?
#  c) the order in which a notified waiter and a task that asks for the lock in the iteration
#     after the notify() (before the notified waiter ran again) get the lock;
#  d) a task that cancelled itself while holding the lock, then calls wait(): is the lock released
#     (to a task queued for it) before the CancelledError comes out?
import asyncio


async def main():
    loop = asyncio.get_running_loop()

    def make(cond, log):
        async def waiter(name):
            async with cond:
                try:
                    await cond.wait()
                    log.append(f"{name} woken (locked={cond.locked()})")
                except asyncio.CancelledError:
                    log.append(f"{name} CancelledError, holds lock={cond.locked()}")
                    raise
        return waiter

    # a)
    cond, log = asyncio.Condition(), []
    waiter = make(cond, log)
    w1 = asyncio.create_task(waiter("w1"))
    w2 = asyncio.create_task(waiter("w2"))
    await asyncio.sleep(0)
    async with cond:
        w1.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        log.append(f"main still holds the lock; w1.done()={w1.done()}")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    log.append(f"w2.done()={w2.done()}")
    w2.cancel()
    await asyncio.gather(w1, w2, return_exceptions=True)
    print("a) cancelled while waiting:", "; ".join(log))

    # b)
    cond, log = asyncio.Condition(), []
    waiter = make(cond, log)
    w1 = asyncio.create_task(waiter("w1"))
    w2 = asyncio.create_task(waiter("w2"))
    await asyncio.sleep(0)
    async with cond:
        cond.notify(1)
        w1.cancel()
        await asyncio.sleep(0)
        log.append(f"main still holds the lock; w1.done()={w1.done()}")
    await asyncio.sleep(0.01)
    log.append(f"w2.done()={w2.done()}")
    if not w2.done():
        w2.cancel()
    await asyncio.gather(w1, w2, return_exceptions=True)
    print("b) notified, then cancelled:", "; ".join(log))

    # c) c1: notify(), then another task is created that asks for the lock;
    #    c2: another task is created (it asks for the lock in its first step), then notify().
    #    Both steps come before the notified waiter runs again.
    for name, other_first in [("c1) notify(), then a new task asks for the lock", False),
                              ("c2) a new task is made, then notify()", True)]:
        cond, log = asyncio.Condition(), []
        waiter = make(cond, log)

        async def other():
            async with cond:
                log.append("other got the lock")

        w1 = asyncio.create_task(waiter("w1"))
        await asyncio.sleep(0)
        await cond.acquire()
        if other_first:
            o = asyncio.create_task(other())
            cond.notify()
        else:
            cond.notify()
            o = asyncio.create_task(other())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        cond.release()
        await asyncio.gather(w1, o)
        print(f"{name}:", "; ".join(log))

    # d)
    cond, log = asyncio.Condition(), []

    async def self_cancel_then_wait():
        async with cond:
            asyncio.current_task().cancel()
            try:
                await cond.wait()
            except asyncio.CancelledError:
                log.append(f"w CancelledError, holds lock={cond.locked()}")
                raise

    async def other():
        async with cond:
            log.append("other got the lock")

    w = asyncio.create_task(self_cancel_then_wait())
    o = asyncio.create_task(other())
    await asyncio.gather(w, o, return_exceptions=True)
    print("d) cancel pending when wait() is called:", "; ".join(log))


asyncio.run(main())

# CPython 3.13.0 prints:
#   a) cancelled while waiting: main still holds the lock; w1.done()=False; w1 CancelledError, holds lock=True; w2 woken (locked=True); w2.done()=True
#   b) notified, then cancelled: main still holds the lock; w1.done()=False; w1 CancelledError, holds lock=True; w2 woken (locked=True); w2.done()=True
#   c1) notify(), then a new task asks for the lock: w1 woken (locked=True); other got the lock
#   c2) a new task is made, then notify(): other got the lock; w1 woken (locked=True)
#   d) cancel pending when wait() is called: other got the lock; w CancelledError, holds lock=True
# CPython 3.11.2 (Debian's /usr/bin/python3) prints instead:
#   a) cancelled while waiting: main still holds the lock; w1.done()=False; w1 CancelledError, holds lock=True; w2.done()=False; w2 CancelledError, holds lock=True
#   b) notified, then cancelled: main still holds the lock; w1.done()=False; w1 CancelledError, holds lock=True; w2.done()=False; w2 CancelledError, holds lock=True
#   c1) notify(), then a new task asks for the lock: w1 woken (locked=True); other got the lock
#   c2) a new task is made, then notify(): other got the lock; w1 woken (locked=True)
#   d) cancel pending when wait() is called: other got the lock; w CancelledError, holds lock=True
