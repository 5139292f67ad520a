# Scenario 11: a task cancels itself with a message, then awaits something that is not a plain
# wait: the cancellation reaches what it awaits once the step is over (Task.__step cancels the
# future just yielded), with the message.
# a) a pending future: the future is cancelled with the message;
# b) gather of two child tasks: both children are cancelled with the message;
# c) asyncio.wait() of a child task: the wait raises, the child is left running;
# d) the end of a TaskGroup's `async with` block: the group's tasks are cancelled (without the
#    message) and the CancelledError that propagates carries it.
import asyncio


async def main():
    loop = asyncio.get_running_loop()

    def args(e):
        return repr(e.args[0]) if e.args else "<none>"

    fut = loop.create_future()

    async def awaits_future():
        asyncio.current_task().cancel("m")
        await fut

    t = asyncio.create_task(awaits_future())
    try:
        await t
    except asyncio.CancelledError as e:
        try:
            fut.result()
        except asyncio.CancelledError as f:
            print(f"a) future: awaiter sees {args(e)}; future cancelled()={fut.cancelled()} with {args(f)}")

    log = []

    async def child(i):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError as e:
            log.append(f"child {i}: {args(e)}")
            raise

    async def awaits_gather():
        c1 = asyncio.create_task(child(1))
        c2 = asyncio.create_task(child(2))
        await asyncio.sleep(0)
        asyncio.current_task().cancel("m")
        await asyncio.gather(c1, c2)

    t = asyncio.create_task(awaits_gather())
    try:
        await t
    except asyncio.CancelledError as e:
        print(f"b) gather: " + "; ".join(log) + f"; awaiter sees {args(e)}")

    c1 = None

    async def awaits_wait():
        nonlocal c1
        c1 = asyncio.create_task(asyncio.sleep(0.010))
        asyncio.current_task().cancel("m")
        await asyncio.wait([c1])

    t = asyncio.create_task(awaits_wait())
    try:
        await t
    except asyncio.CancelledError as e:
        print(f"c) wait: awaiter sees {args(e)}; the child done()={c1.done()}")
    await c1

    log = []

    async def ends_group():
        async with asyncio.TaskGroup() as g:
            g.create_task(child(3))
            await asyncio.sleep(0)
            asyncio.current_task().cancel("m")

    t = asyncio.create_task(ends_group())
    try:
        await t
    except asyncio.CancelledError as e:
        print(f"d) TaskGroup: " + "; ".join(log) + f"; awaiter sees {args(e)}")


asyncio.run(main())

# CPython 3.13.0 prints:
#   a) future: awaiter sees 'm'; future cancelled()=True with 'm'
#   b) gather: child 1: 'm'; child 2: 'm'; awaiter sees 'm'
#   c) wait: awaiter sees 'm'; the child done()=False
#   d) TaskGroup: child 3: <none>; awaiter sees 'm'
# CPython 3.11.2 (Debian's /usr/bin/python3) prints the same.
