# Scenario 1: a task that cancels itself (current_task().cancel()) and then
#  a) returns without awaiting anything,
#  b) raises another exception without awaiting anything,
#  c) awaits a coroutine that completes without suspending, then returns,
#  d) awaits sleep(0) / sleep(1) / an Event (something that would suspend),
#  e) awaits a child task (is the child cancelled, with the message?) / shield(child),
# and when the CancelledError surfaces relative to a callback scheduled just before the await.
import asyncio


async def no_suspend():
    return 1


async def main():
    loop = asyncio.get_running_loop()

    async def returns():
        asyncio.current_task().cancel("self")
        return 42

    async def raises():
        asyncio.current_task().cancel("self")
        raise ValueError("boom")

    async def awaits_sync_coro():
        asyncio.current_task().cancel("self")
        v = await no_suspend()
        log.append(f"sync coro returned {v}")
        return 43

    def awaits(kind):
        async def body():
            asyncio.current_task().cancel("self")
            loop.call_soon(lambda: log.append("callback scheduled before the await"))
            try:
                if kind == "sleep0":
                    await asyncio.sleep(0)
                elif kind == "sleep1":
                    await asyncio.sleep(1)
                else:
                    await asyncio.Event().wait()
                log.append("await returned")
            except asyncio.CancelledError as e:
                log.append(f"CancelledError({e.args[0] if e.args else ''}) at the await")
                raise
        return body

    async def child():
        try:
            await asyncio.sleep(10)
            return "child done"
        except asyncio.CancelledError as e:
            log.append(f"child: CancelledError({e.args[0] if e.args else ''})")
            raise

    def awaits_child(shielded):
        async def body():
            c = asyncio.create_task(child())
            await asyncio.sleep(0)
            asyncio.current_task().cancel("self")
            try:
                await (asyncio.shield(c) if shielded else c)
            except asyncio.CancelledError as e:
                log.append(f"CancelledError({e.args[0] if e.args else ''}) at the await; "
                           f"child done()={c.done()}")
                c.cancel()
                raise
        return body

    for name, coro in [("returns", returns), ("raises", raises),
                       ("awaits_sync_coro", awaits_sync_coro),
                       ("awaits sleep(0)", awaits("sleep0")),
                       ("awaits sleep(1)", awaits("sleep1")),
                       ("awaits Event.wait()", awaits("event")),
                       ("awaits a child task", awaits_child(False)),
                       ("awaits shield(child task)", awaits_child(True))]:
        log = []
        t = asyncio.create_task(coro())
        try:
            r = await t
            log.append(f"result {r}")
        except asyncio.CancelledError as e:
            log.append(f"awaiter: CancelledError({e.args[0] if e.args else ''})")
        except ValueError as e:
            log.append(f"awaiter: ValueError({e})")
        log.append(f"cancelled()={t.cancelled()} cancelling()={t.cancelling()}")
        print(f"{name}: " + "; ".join(log))


asyncio.run(main())

# CPython 3.13.0 prints:
#   returns: awaiter: CancelledError(self); cancelled()=True cancelling()=1
#   raises: awaiter: ValueError(boom); cancelled()=False cancelling()=1
#   awaits_sync_coro: sync coro returned 1; awaiter: CancelledError(self); cancelled()=True cancelling()=1
#   awaits sleep(0): callback scheduled before the await; CancelledError(self) at the await; awaiter: CancelledError(self); cancelled()=True cancelling()=1
#   awaits sleep(1): callback scheduled before the await; CancelledError(self) at the await; awaiter: CancelledError(self); cancelled()=True cancelling()=1
#   awaits Event.wait(): callback scheduled before the await; CancelledError(self) at the await; awaiter: CancelledError(self); cancelled()=True cancelling()=1
#   awaits a child task: child: CancelledError(self); CancelledError(self) at the await; child done()=True; awaiter: CancelledError(self); cancelled()=True cancelling()=1
#   awaits shield(child task): CancelledError(self) at the await; child done()=False; child: CancelledError(); awaiter: CancelledError(self); cancelled()=True cancelling()=1
# CPython 3.11.2 (Debian's /usr/bin/python3) prints the same.
