# Scenario 6: what shield() reports when the inner task fails after the outer await was cancelled.
#  a) the inner task raises after the shielded await was cancelled, nobody keeps a reference to it;
#  b) the same, but the caller keeps the inner task and looks at its exception later;
#  c) the inner task raises before anything was cancelled (the awaiter gets the exception).
# The loop's exception handler records what it is given.
import asyncio
import gc


async def main():
    loop = asyncio.get_running_loop()
    reports = []
    loop.set_exception_handler(lambda l, ctx: reports.append(
        f"{ctx['message']} ({type(ctx.get('exception')).__name__}: {ctx.get('exception')})"))

    async def fails_later():
        await asyncio.sleep(0.01)
        raise ValueError("inner failed")

    async def outer(make_inner):
        try:
            await asyncio.shield(make_inner())
        except asyncio.CancelledError:
            return "outer cancelled"

    # a)
    t = asyncio.create_task(outer(fails_later))
    await asyncio.sleep(0)
    t.cancel()
    print("a) outer:", await t)
    await asyncio.sleep(0.05)
    gc.collect()
    await asyncio.sleep(0)
    print("   reports:", reports or "none")
    reports.clear()

    # b)
    inner = asyncio.create_task(fails_later())
    t = asyncio.create_task(outer(lambda: inner))
    await asyncio.sleep(0)
    t.cancel()
    print("b) outer:", await t)
    await asyncio.sleep(0.05)
    print(f"   inner: done()={inner.done()} exception()={inner.exception()!r}")
    del inner
    gc.collect()
    await asyncio.sleep(0)
    print("   reports:", reports or "none")
    reports.clear()

    # c)
    try:
        await asyncio.shield(fails_later())
    except ValueError as e:
        print("c) awaiter gets:", repr(e))
    gc.collect()
    await asyncio.sleep(0)
    print("   reports:", reports or "none")


asyncio.run(main())

# CPython 3.13.0 prints:
#   a) outer: outer cancelled
#      reports: ['Task exception was never retrieved (ValueError: inner failed)']
#   b) outer: outer cancelled
#      inner: done()=True exception()=ValueError('inner failed')
#      reports: none
#   c) awaiter gets: ValueError('inner failed')
#      reports: none
# CPython 3.11.2 (Debian's /usr/bin/python3) prints the same.
