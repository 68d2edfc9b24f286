"""A real redis-server for the tests: started on a free loopback port or a Unix
socket in a temporary directory, killed and restarted at will, always stopped.

Where redis-server is not installed the tests that need it skip, saying so,
unless ANYNET_REQUIRE_REDIS is set (CI sets it): then they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from support import TIMEOUT

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
)


def require_redis_server():
    if REDIS_SERVER is None:
        message = "redis-server is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("ANYNET_REQUIRE_REDIS", "") not in ("", "0"):
            pytest.fail(message + ", and ANYNET_REQUIRE_REDIS is set")
        pytest.skip(message)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """One redis-server process; ``url`` stays the same across restarts."""

    def __init__(self, directory, unix_socket=False):
        self.directory = str(directory)
        self.port = 0 if unix_socket else free_port()
        self.socket_path = os.path.join(self.directory, "redis.sock") if unix_socket else None
        self.process = None

    @property
    def url(self):
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        command = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]
        if self.socket_path is not None:
            command += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        self._wait_until_answering()

    def _connect(self):
        if self.socket_path is not None:
            probe = socket.socket(socket.AF_UNIX)
            probe.settimeout(1)
            probe.connect(self.socket_path)
        else:
            probe = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        return probe

    def command(self, *words):
        """Send one inline command and return the raw reply (a test's own look at Redis)."""
        with self._connect() as probe:
            probe.sendall(" ".join(words).encode() + b"\r\n")
            return probe.recv(65536)

    def _wait_until_answering(self):
        deadline = time.monotonic() + TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                if self.command("PING") == b"+PONG\r\n":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer in time")
            time.sleep(0.01)

    def kill(self):
        """kill -9: no goodbye to any client."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(TIMEOUT)

    def pause(self):
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        self.process.send_signal(signal.SIGCONT)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server on a free loopback port, stopped after the test."""
    require_redis_server()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_unix_server(tmp_path):
    """A redis-server listening on a Unix socket in the test's directory only."""
    require_redis_server()
    server = RedisServer(tmp_path, unix_socket=True)
    server.start()
    yield server
    server.stop()
