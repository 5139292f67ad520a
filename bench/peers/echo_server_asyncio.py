#!/usr/bin/env python3
"""Python peer of ``bench_echo_server``: an asyncio streams echo server.

Usage:
    python3 bench/peers/echo_server_asyncio.py PORT [--loop asyncio|uvloop] [--cert CERT --key KEY]

Listens on 127.0.0.1:PORT (0: the kernel picks a port), prints
``serving on 127.0.0.1:PORT`` with the real port once it listens, and echoes
every byte of every connection until the peer closes it, with the same loop as
the C++ server::

    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()

One event loop, one thread: ``--loop asyncio`` is the stock selector loop,
``--loop uvloop`` uses ``uvloop.new_event_loop`` via
``asyncio.Runner(loop_factory=...)``.  ``start_server`` is called with its
defaults except the backlog, SOMAXCONN as the reference servers' (Python's
default 100 would not do for 10,000 connections opened at once); asyncio and
uvloop both set TCP_NODELAY on accepted sockets.  The soft RLIMIT_NOFILE is raised to the hard limit.  A connection
reset by the peer ends that connection only.  Runs until killed.
With ``--cert``/``--key`` it serves TLS (bench/run_tls_bench.sh):
``start_server(..., ssl=ctx)`` with ``ctx = ssl.create_default_context(
ssl.Purpose.CLIENT_AUTH)`` and ``ctx.load_cert_chain(CERT, KEY)``, defaults
otherwise.
See bench/README.md (the echo benchmark) and bench/run_echo_bench.sh.
"""

import argparse
import asyncio
import os
import resource
import socket
import ssl
import sys


async def handle(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def serve(port, ctx):
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=socket.SOMAXCONN, ssl=ctx)
    real_port = server.sockets[0].getsockname()[1]
    print(f"serving on 127.0.0.1:{real_port}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    ctx = None
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        # TLS_TICKETS=N: session tickets per handshake (OpenSSL's default 2; Go's crypto/tls sends 1).
        if os.environ.get("TLS_TICKETS"):
            ctx.num_tickets = int(os.environ["TLS_TICKETS"])
    if not 0 <= args.port <= 65535:
        parser.error("PORT must be in 0..65535")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415 (only when asked for)

        factory = uvloop.new_event_loop
    else:
        factory = None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(args.port, ctx))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
