# Scenario 3: which message wins when cancel(msg) is called more than once.
# The rule CPython follows (Task.cancel / Task.__step): a request that reaches a task suspended on
# something cancellable cancels that thing with its message, and that delivery keeps it (requests
# arriving before the task runs again are counted, their messages dropped); a request that finds
# the task not waiting on anything (before its first step, running, or already scheduled after a
# normal wake-up, or yielding with sleep(0)) sets the message of the pending cancellation: the
# last one wins, a request without a message clears it.
import asyncio


def msg(e):
    return repr(e.args[0]) if e.args else "<none>"


async def main():
    async def sleeper(log, catch_first=False, second=10):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError as e:
            log.append(f"first: {msg(e)}")
            if not catch_first:
                raise
            log.append(f"uncancel() -> {asyncio.current_task().uncancel()}")
        try:
            await asyncio.sleep(second)
            log.append("second sleep returned")
        except asyncio.CancelledError as e:
            log.append(f"second: {msg(e)}")
            raise

    async def yielder(log):
        try:
            while True:
                await asyncio.sleep(0)
        except asyncio.CancelledError as e:
            log.append(f"yielder: {msg(e)}")
            raise

    async def outcome(t, log):
        try:
            await t
            log.append("returned")
        except asyncio.CancelledError as e:
            log.append(f"awaiter sees {msg(e)}")
        return "; ".join(log)

    log = []
    t = asyncio.create_task(sleeper(log))
    t.cancel("a")
    t.cancel("b")
    print("a) 'a' then 'b' before the first step:", await outcome(t, log))

    log = []
    t = asyncio.create_task(sleeper(log))
    t.cancel("a")
    t.cancel()
    print("b) 'a' then none before the first step:", await outcome(t, log))

    log = []
    t = asyncio.create_task(sleeper(log))
    await asyncio.sleep(0)
    t.cancel("a")
    t.cancel("b")
    print("c) 'a' then 'b' while suspended:", await outcome(t, log))

    log = []
    t = asyncio.create_task(sleeper(log))
    await asyncio.sleep(0)
    t.cancel()
    t.cancel("b")
    print("d) none then 'b' while suspended:", await outcome(t, log))

    log = []
    t = asyncio.create_task(yielder(log))
    await asyncio.sleep(0)  # t is scheduled (sleep(0) waits on nothing)
    t.cancel("a")
    t.cancel("b")
    print("e) 'a' then 'b' while scheduled (sleep(0)):", await outcome(t, log))

    log = []
    t = asyncio.create_task(sleeper(log, catch_first=True))
    await asyncio.sleep(0)
    t.cancel("a")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    t.cancel("b")
    print("f) caught 'a', awaits again, then 'b':", await outcome(t, log))

    log = []
    t = asyncio.create_task(sleeper(log, catch_first=True))
    await asyncio.sleep(0)
    t.cancel("a")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    t.cancel()
    print("g) caught 'a', awaits again, then none:", await outcome(t, log))

    log = []
    t = asyncio.create_task(sleeper(log, catch_first=True, second=0.01))
    await asyncio.sleep(0)
    t.cancel("a")
    t.cancel("b")
    print("h) 'a' then 'b' while suspended, caught, awaits again:", await outcome(t, log),
          f"cancelling()={t.cancelling()}")


asyncio.run(main())

# CPython 3.13.0 prints:
#   a) 'a' then 'b' before the first step: awaiter sees 'b'
#   b) 'a' then none before the first step: awaiter sees <none>
#   c) 'a' then 'b' while suspended: first: 'a'; awaiter sees 'a'
#   d) none then 'b' while suspended: first: <none>; awaiter sees <none>
#   e) 'a' then 'b' while scheduled (sleep(0)): yielder: 'b'; awaiter sees 'b'
#   f) caught 'a', awaits again, then 'b': first: 'a'; uncancel() -> 0; second: 'b'; awaiter sees 'b'
#   g) caught 'a', awaits again, then none: first: 'a'; uncancel() -> 0; second: <none>; awaiter sees <none>
#   h) 'a' then 'b' while suspended, caught, awaits again: first: 'a'; uncancel() -> 1; second sleep returned; returned cancelling()=1
# CPython 3.11.2 (Debian's /usr/bin/python3) prints the same.
