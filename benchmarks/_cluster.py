"""What the pub/sub benchmarks share: a redis-server, and processes that speak JSON lines.

Each benchmark script runs itself again in several processes (servers, clients),
each announcing itself with one JSON line on its standard output and ending with
another (its figures); the parent reads them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

BENCHMARKS = Path(__file__).resolve().parent
REPOSITORY = BENCHMARKS.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Redis:
    """A throwaway redis-server on a free loopback port (no persistence)."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(executable):
            raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
        self.executable = executable
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="anynet-bench-redis-")
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.directory,
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16) == b"+PONG\r\n":
                        return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class Child:
    """A process running ``script`` with ``arguments``; JSON lines on its stdout."""

    def __init__(self, script: str, arguments: List[str], pin: Optional[str] = None) -> None:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(REPOSITORY)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        command = [sys.executable, str(BENCHMARKS / script), *arguments]
        if pin is not None:
            command = ["taskset", "-c", pin, *command]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stdin=subprocess.PIPE, env=environment, text=True
        )

    def read(self) -> Dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark process exited with {self.process.wait()}")
        return dict(json.loads(line))

    def stop(self) -> None:
        """Close its stdin (the signal to finish) and wait for it."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def announce(**fields: Any) -> None:
    """One JSON line to the parent."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def until_stdin_closes() -> None:
    """Return when the parent closes our stdin (or exits)."""
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


def percentile(values: List[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
