"""Echo server for the Autobahn|Testsuite fuzzing client (anynet as the server).

Listens on 127.0.0.1 at the port given by ``--port`` or the ``PORT``
environment variable (default 9001) and sends every message back with its own
type until SIGTERM or SIGINT.

The conformance run needs two limits above the library defaults: cases 9.1.6
and 9.2.6 send 16 MiB messages, so the largest message accepted is 32 MiB; and
keep-alive pings are off, because the suite counts them as unexpected frames.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from anynet import websocket

LARGEST_MESSAGE = 32 * 1024 * 1024


async def echo(client: websocket.WebSocketClient) -> None:
    async for message in client:
        if isinstance(message, bytes):
            await client.send(message)
        else:
            await client.send_text(message)


async def serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with websocket.serve(
        echo, host, port, max_message_size=LARGEST_MESSAGE, ping_interval=None
    ) as server:
        bound_host, bound_port = server.local_address()[:2]
        print(f"anynet echo server on ws://{bound_host}:{bound_port}/", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9001")))
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
