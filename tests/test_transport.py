"""The layer under the frames: accepting at the file-descriptor limit, and the
TLS duties of the transports (handshake timeout, close_notify, SNI, no
renegotiation), on both event loops.

At the limit, the server runs in a process of its own (tests/fd_limit_server.py) with
RLIMIT_NOFILE lowered to 128, and a flood of connections takes every descriptor
it has. It must back off (not spin, not flood its log), then accept again once
descriptors are free.
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rawpeer
from anynet import websocket
from conftest import LOOP_FACTORIES
from support import TIMEOUT, echo, python_path

TESTS = Path(__file__).resolve().parent
SERVER = TESTS / "fd_limit_server.py"
DESCRIPTOR_LIMIT = 128
# More connections than the server has descriptors: the rest wait in its listen queue.
FLOOD = 3 * DESCRIPTOR_LIMIT
# Retries over which the server's CPU time is compared with the time that passed.
MEASURED_RETRIES = 5

BACKING_OFF = "cannot accept connections"
STILL_FAILING = "still fails"
ACCEPTING_AGAIN = "accepting connections on"


def cpu_seconds(pid: int) -> float:
    """User plus system time the process has used, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """tests/fd_limit_server.py, its port, and its log lines as they come."""

    def __init__(self, loop_name: str) -> None:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = python_path(TESTS)
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), loop_name, str(DESCRIPTOR_LIMIT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
            text=True,
        )
        self.log: list[str] = []
        self._stdout: queue.Queue[str] = queue.Queue()
        self._stderr: queue.Queue[str] = queue.Queue()
        for stream, lines in ((self.process.stdout, self._stdout), (self.process.stderr, self._stderr)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()
        self.port = int(self._next(self._stdout))

    @staticmethod
    def _read(stream, lines: queue.Queue[str]) -> None:
        for line in stream:
            lines.put(line)
        lines.put("")

    def _next(self, lines: queue.Queue[str]) -> str:
        try:
            line = lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"the server said nothing for {TIMEOUT} s; log: {self.log}") from None
        if not line:
            raise AssertionError(f"the server exited ({self.process.wait()}); log: {self.log}")
        return line

    def wait_for_log(self, text: str) -> None:
        """Read log lines until one contains ``text``."""
        while True:
            line = self._next(self._stderr)
            self.log.append(line)
            if text in line:
                return

    def stop(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()


async def echo_once(port: int) -> str:
    async with websocket.connect(f"ws://127.0.0.1:{port}/") as client:
        await client.send_text("after the flood")
        return await asyncio.wait_for(client.recv_text(), TIMEOUT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("loop_name", list(LOOP_FACTORIES))
def test_accept_backs_off_at_the_descriptor_limit_and_resumes(loop_name):
    server = ServerProcess(loop_name)
    flood: list[socket.socket] = []
    try:
        for _ in range(FLOOD):
            flood.append(socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT))
        server.wait_for_log(BACKING_OFF)
        # From the first retry on, the connections accepted before the limit
        # are set up, and the server has nothing to do but wait.
        server.wait_for_log(STILL_FAILING)
        cpu_before, wall_before = cpu_seconds(server.process.pid), time.monotonic()
        for _ in range(MEASURED_RETRIES):
            server.wait_for_log(STILL_FAILING)
        cpu_used = cpu_seconds(server.process.pid) - cpu_before
        wall = time.monotonic() - wall_before
        # A spinning accept loop would use most of a core; this one a few
        # system calls per retry (the clock ticks every 10 ms or less).
        assert cpu_used < 0.1 * wall, (cpu_used, wall)
        held = list(server.log)
        assert sum(BACKING_OFF in line for line in held) == 1, held
        assert not [line for line in held if line.startswith(("WARNING", "ERROR")) and BACKING_OFF not in line], held
        assert not any("Traceback" in line for line in held), held

        for connection in flood:
            connection.close()
        flood.clear()
        server.wait_for_log(ACCEPTING_AGAIN)
        assert asyncio.run(echo_once(server.port)) == "after the flood"
    finally:
        for connection in flood:
            connection.close()
        server.stop()


# ------------------------------------------------------------------ TLS, on both loops


def tls_echo_server(pki, **options):
    return websocket.serve(echo, "127.0.0.1", 0, pki.server_context(), ping_interval=None, **options)


async def test_tls_handshake_timeout_drops_a_silent_client(pki):
    async with tls_echo_server(pki, handshake_timeout=0.2) as server:
        reader, writer = await asyncio.open_connection(*server.local_address())
        try:
            # No ClientHello: the server gives up on the handshake and closes.
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        finally:
            writer.close()


def close_through_blocking_tls_client(port: int, client_context: ssl.SSLContext) -> bytes:
    """Upgrade, send a Close frame, and read until the server ends TLS.

    With ``suppress_ragged_eofs=False`` a TCP end without the server's
    close_notify raises SSLEOFError instead of reading as b"".
    """
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with client_context.wrap_socket(
            raw, server_hostname="localhost", suppress_ragged_eofs=False
        ) as tls:
            tls.sendall(rawpeer.upgrade_request()[0])
            received = b""
            while b"\r\n\r\n" not in received:
                received += tls.recv(4096)
            tls.sendall(rawpeer.masked_frame(0x8, struct.pack("!H", 1000)))
            while True:
                data = tls.recv(4096)
                if not data:
                    return received
                received += data


async def test_server_ends_tls_with_close_notify(pki):
    async with tls_echo_server(pki) as server:
        client_context = pki.client_context().get(False)
        received = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(
                None, close_through_blocking_tls_client, server.local_address()[1], client_context
            ),
            TIMEOUT,
        )
    assert received.startswith(b"HTTP/1.1 101 ")
    # The server's Close frame came back before close_notify and the TCP end.
    assert received.endswith(b"\x88\x02\x03\xe8")


async def test_client_sends_the_host_name_as_sni(pki):
    names = []
    context = pki.server_context()
    context.get(True).sni_callback = lambda ssl_object, name, ssl_context: names.append(name)
    async with websocket.serve(echo, "127.0.0.1", 0, context, ping_interval=None) as server:
        url = f"wss://localhost:{server.local_address()[1]}/"
        async with websocket.connect(url, pki.client_context()) as client:
            await client.send_text("hello")
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "hello"
    assert names == ["localhost"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_server_refuses_tls_renegotiation(pki):
    async with tls_echo_server(pki) as server:
        host, port = server.local_address()[:2]
        # TLS 1.2: TLS 1.3 has no renegotiation. "R" on a line of its own asks
        # s_client to renegotiate.
        peer = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-connect", f"{host}:{port}", "-tls1_2", "-brief",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            output = b""
            while b"CONNECTION ESTABLISHED" not in output:
                line = await asyncio.wait_for(peer.stdout.readline(), TIMEOUT)
                assert line, output
                output += line
            peer.stdin.write(b"R\n")
            output += await asyncio.wait_for(peer.stdout.read(), TIMEOUT)
        finally:
            if peer.returncode is None:
                peer.kill()
            await peer.wait()
    assert b"RENEGOTIATING" in output
    assert b"no renegotiation" in output
