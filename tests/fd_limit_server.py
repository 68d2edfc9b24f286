"""An anynet WebSocket server in a process of its own, with few file descriptors.

    python tests/fd_limit_server.py LOOP LIMIT

Lowers its RLIMIT_NOFILE to LIMIT, serves an echo endpoint on 127.0.0.1 (port
chosen by the system, printed on stdout as the first line), logs anynet's
records (DEBUG and up, one line each) on stderr, and runs until stdin closes.
tests/test_transport.py floods it with connections.
"""

import asyncio
import logging
import resource
import sys

from anynet import websocket
from support import echo


async def serve(loop_name: str) -> None:
    # handshake_timeout: the flood's idle connections must stay until the test
    # frees them.
    async with websocket.serve(echo, "127.0.0.1", 0, handshake_timeout=600) as server:
        print(server.local_address()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def main() -> None:
    loop_name, limit = sys.argv[1], int(sys.argv[2])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("anynet").setLevel(logging.DEBUG)
    if loop_name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve(loop_name))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
