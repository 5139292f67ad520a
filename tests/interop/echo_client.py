"""Python asyncio as a client of our echo server (tests/interop_test.cpp).

usage: echo_client.py HOST PORT

Sends lines, binary messages of many sizes and a 4 MiB blob, checks that every byte comes back,
half-closes, reads to EOF. Prints "OK <bytes verified>" and exits 0, or prints the problem and
exits 1.
"""
import asyncio
import os
import random
import sys


async def main(host, port):
    reader, writer = await asyncio.open_connection(host, port)
    verified = 0
    rng = random.Random(1234)
    # Lines (the server echoes bytes, so lines come back as lines).
    for i in range(100):
        line = f"line {i} from python asyncio\n".encode()
        writer.write(line)
        await writer.drain()
        back = await reader.readline()
        if back != line:
            print(f"line {i}: sent {line!r}, got {back!r}")
            return 1
        verified += len(back)
    # Binary messages of many sizes, NULs included.
    for size in (1, 2, 100, 1000, 4095, 4096, 4097, 65535, 65536, 65537, 300000):
        msg = bytes(rng.getrandbits(8) for _ in range(size))
        writer.write(msg)
        await writer.drain()
        back = await reader.readexactly(size)
        if back != msg:
            print(f"binary message of {size} bytes came back different")
            return 1
        verified += size
    # A large blob written at once, read concurrently.
    blob = os.urandom(4 << 20)
    writer.write(blob)
    back = await reader.readexactly(len(blob))
    if back != blob:
        print("the 4 MiB blob came back different")
        return 1
    verified += len(blob)
    writer.write_eof()
    rest = await reader.read()
    if rest:
        print(f"unexpected bytes after EOF: {rest[:50]!r}")
        return 1
    writer.close()
    await writer.wait_closed()
    print(f"OK {verified}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]))))
