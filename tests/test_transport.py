"""The layer under the frames: accepting at the file-descriptor limit.

The server runs in a process of its own (tests/fd_limit_server.py) with
RLIMIT_NOFILE lowered to 128, and a flood of connections takes every descriptor
it has. It must back off (not spin, not flood its log), then accept again once
descriptors are free.
"""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from anynet import websocket
from conftest import LOOP_FACTORIES
from support import TIMEOUT

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
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(TESTS.parent), str(TESTS), environment.get("PYTHONPATH", "")]
        )
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
