# Scenario 4: timeouts at the edges.
#  a-c) asyncio.timeout_at(a deadline already past when entered), with a body that does not
#       suspend, that yields with sleep(0), that sleeps;
#  d)   a deadline that falls due in the same iteration as two other callbacks, one due before the
#       timeout's own callback and one after: what expired() returns in each, and what the body
#       (sleeping) sees;
#  e)   the body waits on an Event that a callback due in the same iteration, just before the
#       deadline, sets: is the wake-up or the timeout seen?
#  f-g) wait_for(task) whose task finishes (or is woken) in the iteration in which the deadline
#       fires, before the timeout's callback: value or TimeoutError?
# "Same iteration": every deadline is a few ms apart, and the loop is blocked (time.sleep) past all
# of them, so that they all run in the next iteration, in deadline order.
import asyncio
import time


async def main():
    loop = asyncio.get_running_loop()

    async def run_body(name, body, t):
        try:
            async with t:
                r = await body()
            print(f"{name}: returned {r!r}; expired()={t.expired()}")
        except TimeoutError:
            print(f"{name}: TimeoutError; expired()={t.expired()}")

    async def no_suspend():
        return "value"

    async def yields():
        await asyncio.sleep(0)
        return "value"

    async def sleeps():
        await asyncio.sleep(1)
        return "value"

    for name, body in [("a) past deadline, body does not suspend", no_suspend),
                       ("b) past deadline, body yields (sleep(0))", yields),
                       ("c) past deadline, body sleeps", sleeps)]:
        await run_body(name, body, asyncio.timeout_at(loop.time() - 1))

    # d)
    seen = []
    t = asyncio.timeout(0.010)
    loop.call_later(0.005, lambda: seen.append(f"callback before: expired()={t.expired()}"))
    loop.call_later(0.015, lambda: seen.append(f"callback after: expired()={t.expired()}"))

    async def sleeps_and_reports():
        try:
            loop.call_soon(time.sleep, 0.030)  # block the loop past every deadline
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            seen.append("body: CancelledError")
            raise

    await run_body("d) deadline between two callbacks", sleeps_and_reports, t)
    print("   " + "; ".join(seen))

    # e)
    ev = asyncio.Event()
    t = asyncio.timeout(0.010)
    loop.call_later(0.005, ev.set)

    async def waits_event():
        loop.call_soon(time.sleep, 0.030)
        await ev.wait()
        return "event"

    await run_body("e) event set just before the deadline, same iteration", waits_event, t)

    # f, g)
    for name, blocks_after_set in [
            ("f) wait_for: the task's last step runs in the deadline's iteration, before the "
             "timeout's callback", True),
            ("g) wait_for: the task is woken in the deadline's iteration, before the timeout's "
             "callback", False)]:
        ev = asyncio.Event()

        async def inner():
            await ev.wait()
            return "value"

        task = asyncio.create_task(inner())
        await asyncio.sleep(0)

        def set_event(block):
            ev.set()  # the task's wake-up is scheduled for the next iteration
            if block:
                time.sleep(0.030)  # ... which is the deadline's iteration

        loop.call_later(0.005, set_event, blocks_after_set)
        if not blocks_after_set:
            loop.call_soon(time.sleep, 0.030)
        try:
            r = await asyncio.wait_for(task, 0.010)
            print(f"{name}: returned {r!r}")
        except TimeoutError:
            print(f"{name}: TimeoutError; task.done()={task.done()} "
                  f"cancelled()={task.cancelled()}")


asyncio.run(main())

# CPython 3.13.0 prints:
#   a) past deadline, body does not suspend: returned 'value'; expired()=False
#   b) past deadline, body yields (sleep(0)): TimeoutError; expired()=True
#   c) past deadline, body sleeps: TimeoutError; expired()=True
#   d) deadline between two callbacks: TimeoutError; expired()=True
#      callback before: expired()=False; callback after: expired()=True; body: CancelledError
#   e) event set just before the deadline, same iteration: TimeoutError; expired()=True
#   f) wait_for: the task's last step runs in the deadline's iteration, before the timeout's callback: TimeoutError; task.done()=True cancelled()=False
#   g) wait_for: the task is woken in the deadline's iteration, before the timeout's callback: TimeoutError; task.done()=True cancelled()=True
# CPython 3.11.2 (Debian's /usr/bin/python3) prints instead:
#   a) past deadline, body does not suspend: returned 'value'; expired()=False
#   b) past deadline, body yields (sleep(0)): TimeoutError; expired()=True
#   c) past deadline, body sleeps: TimeoutError; expired()=True
#   d) deadline between two callbacks: TimeoutError; expired()=True
#      callback before: expired()=False; callback after: expired()=True; body: CancelledError
#   e) event set just before the deadline, same iteration: TimeoutError; expired()=True
#   f) wait_for: the task's last step runs in the deadline's iteration, before the timeout's callback: returned 'value'
#   g) wait_for: the task is woken in the deadline's iteration, before the timeout's callback: returned 'value'
