"""Python asyncio as a server for our open_connection client (tests/interop_test.cpp).

usage: echo_server.py

Listens on 127.0.0.1 with port 0, prints "PORT <port>" once it listens, echoes every byte of
every connection until the peer half-closes, then closes that connection. After the first
connection has finished it prints "DONE <bytes echoed>" and exits.
"""
import asyncio
import sys


async def main():
    finished = asyncio.Event()
    total = 0

    async def handle(reader, writer):
        nonlocal total
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
                total += len(data)
            writer.close()
            await writer.wait_closed()
        finally:
            finished.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await finished.wait()
    print(f"DONE {total}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
