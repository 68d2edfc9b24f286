"""A real nginx in front of an anynet server: a foreground process on a
loopback port, with its own prefix directory, configuration and logs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Union

from support import TIMEOUT, system_program

# The reverse proxy of docs/game-servers.md: HTTP/1.1 to the upstream, with
# the Upgrade and Connection headers passed on so that WebSocket upgrades work.
CONFIGURATION = """\
pid nginx.pid;
error_log logs/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    access_log logs/access.log;
    client_body_temp_path temp/client_body;
    proxy_temp_path temp/proxy;
    fastcgi_temp_path temp/fastcgi;
    uwsgi_temp_path temp/uwsgi;
    scgi_temp_path temp/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


class Nginx:
    """A running nginx: its ``port`` and its ``error_log`` text."""

    def __init__(self, prefix: Path, port: int) -> None:
        self.prefix = prefix
        self.port = port

    def error_log(self) -> str:
        return (self.prefix / "logs" / "error.log").read_text(errors="replace")


@contextlib.asynccontextmanager
async def run_nginx(prefix: Path, upstream: Union[int, Path]):
    """Run nginx in ``prefix`` (a fresh directory) proxying to ``upstream``, a
    port on 127.0.0.1 or the path of a Unix socket, until the block ends."""
    program = system_program("nginx")
    if isinstance(upstream, int):
        proxy_pass = f"http://127.0.0.1:{upstream}"
    else:
        proxy_pass = f"http://unix:{upstream}:"
    for directory in ("logs", "temp"):
        (prefix / directory).mkdir(parents=True, exist_ok=True)
    # nginx cannot listen on port 0 and tell us the port: take a free one. If
    # another process takes it first, nginx fails to bind and we try again.
    for _ in range(5):
        port = _free_port()
        (prefix / "nginx.conf").write_text(CONFIGURATION.format(port=port, upstream=proxy_pass))
        process = await asyncio.create_subprocess_exec(
            program,
            "-p",
            str(prefix),
            "-c",
            "nginx.conf",
            "-e",
            "logs/error.log",
            "-g",
            "daemon off; master_process off;",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        if await _listening(process, port):
            break
        _, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
        if b"Address already in use" not in stderr:
            raise RuntimeError(f"nginx did not start: {stderr.decode(errors='replace')}")
    else:
        raise RuntimeError("nginx found no free port")
    try:
        yield Nginx(prefix, port)
    finally:
        if process.returncode is None:
            process.terminate()  # SIGTERM: nginx's fast shutdown
        await asyncio.wait_for(process.communicate(), TIMEOUT)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _listening(process: asyncio.subprocess.Process, port: int) -> bool:
    """Wait until nginx accepts connections on ``port`` (True) or exits (False)."""
    exited = asyncio.ensure_future(process.wait())

    async def poll() -> bool:
        while not exited.done():
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:
                # Not bound yet: look again soon, or as soon as nginx exits.
                await asyncio.wait([exited], timeout=0.02)
                continue
            writer.close()
            return True
        return False

    try:
        return await asyncio.wait_for(poll(), TIMEOUT)
    finally:
        exited.cancel()
