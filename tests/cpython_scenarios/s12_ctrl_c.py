# Ctrl-C under asyncio.run() (Python 3.11+'s Runner): what the first and a second SIGINT do.
# The C++ side: run_test.cpp `RunCtrlC.*` (b, c, d, e, f) and the death test
# `RunCtrlC.ASecondCtrlCWhileUnwindingKillsTheProcessBySigint` (c).
import asyncio, os, signal, time

def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)

async def a_main_that_sleeps():
    asyncio.get_running_loop().call_later(0.01, ctrl_c)
    await asyncio.sleep(10)

async def a_main_that_swallows_the_cancel():
    asyncio.get_running_loop().call_later(0.01, ctrl_c)
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        return 42

async def a_main_that_unwinds_slowly():
    asyncio.get_running_loop().call_later(0.01, ctrl_c)
    try:
        await asyncio.sleep(10)
    finally:
        asyncio.get_running_loop().call_later(0.01, ctrl_c)
        await asyncio.sleep(10)

async def a_main_with_its_own_handler():
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    loop.add_signal_handler(signal.SIGINT, lambda: got.set_result("handler"))
    loop.call_later(0.01, ctrl_c)
    return await got

def show(name, main):
    t0 = time.monotonic()
    try:
        r = asyncio.run(main())
        print(name, "returned", r)
    except BaseException as e:
        print(name, "raised", type(e).__name__, "after <1s" if time.monotonic() - t0 < 1 else "after >=1s")
    print(name, "SIGINT back to default:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)

show("b", a_main_that_sleeps)
show("c", a_main_that_unwinds_slowly)
show("d", a_main_that_swallows_the_cancel)
show("e", a_main_with_its_own_handler)
signal.signal(signal.SIGINT, signal.SIG_IGN)
async def ignored():
    ctrl_c()
    await asyncio.sleep(0.05)
    return "not interrupted"
show("f", ignored)

# CPython 3.13.0:
# b raised KeyboardInterrupt after <1s
# b SIGINT back to default: True
# c raised KeyboardInterrupt after <1s
# c SIGINT back to default: True
# d returned 42
# d SIGINT back to default: True
# e returned handler
# e SIGINT back to default: True
# f returned not interrupted
# f SIGINT back to default: False
