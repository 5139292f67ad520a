# Scenario 2: a sleep whose timer falls due in the same iteration as an outside cancel().
# Both the sleep's timer and a timer that calls task.cancel() are made due in one iteration (the
# loop is blocked past both deadlines); the cancel's deadline is before or after the sleep's.
# Also: the order of a task woken by its sleep timer and a call_later callback due in the same
# iteration (scheduled after the sleep), and what a 'cancel right after the timer' does to the
# iteration count.
import asyncio
import time


async def main():
    loop = asyncio.get_running_loop()

    for order in ("cancel before the timer", "cancel after the timer"):
        log = []

        async def sleeper():
            try:
                await asyncio.sleep(0.010)
                log.append("sleep returned")
                await asyncio.sleep(0)
                log.append("next await returned")
            except asyncio.CancelledError:
                log.append("CancelledError")
                raise

        t = asyncio.create_task(sleeper())
        await asyncio.sleep(0)  # t is now sleeping (deadline now+10ms)
        cancel_delay = 0.005 if order == "cancel before the timer" else 0.015
        loop.call_later(cancel_delay, lambda: log.append(f"cancel() -> {t.cancel()}"))
        time.sleep(0.030)  # both deadlines pass: both callbacks are due in the next iteration
        try:
            await t
        except asyncio.CancelledError:
            pass
        print(f"{order}: " + "; ".join(log) + f"; cancelled()={t.cancelled()}")

    # A task's sleep and a call_later callback that fall due in the same iteration, the sleep's
    # timer first: does the task run before the callback?
    log = []

    async def sleeper2():
        await asyncio.sleep(0.010)
        log.append("task resumed")

    t = asyncio.create_task(sleeper2())
    await asyncio.sleep(0)
    loop.call_later(0.010, lambda: log.append("call_later callback"))
    time.sleep(0.030)
    await t
    print("sleep timer then callback, same iteration: " + "; ".join(log))


asyncio.run(main())

# CPython 3.13.0 prints:
#   cancel before the timer: cancel() -> True; CancelledError; cancelled()=True
#   cancel after the timer: cancel() -> True; CancelledError; cancelled()=True
#   sleep timer then callback, same iteration: call_later callback; task resumed
# CPython 3.11.2 (Debian's /usr/bin/python3) prints the same.
