"""A real headless Chromium (Debian's package, never a downloaded build),
driven over its DevTools protocol.

One browser serves the whole session (starting one costs a second or more);
each test opens its own DevTools connection and page on its own event loop,
and closes them at the end. The DevTools client is python-websockets, so
that the browser tests do not rely on the client they test.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import re
import subprocess
import tempfile
import threading

from websockets.asyncio.client import connect as devtools_connect

from support import TIMEOUT


class Chromium:
    """A headless Chromium process and the DevTools URL of its browser target."""

    def __init__(self, program: str) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="anynet-chromium-")
        arguments = [
            program,
            "--headless=new",
            "--remote-debugging-port=0",
            f"--user-data-dir={self._profile.name}",
            # The wss:// tests use a certificate made by the test; the pages
            # and sockets are all on 127.0.0.1.
            "--ignore-certificate-errors",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers often give /dev/shm 64 MiB: too little
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "about:blank",
        ]
        if os.geteuid() == 0:
            arguments.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self._process = subprocess.Popen(
            arguments, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # Chromium logs to stderr all its life: keep reading it so that it
        # never blocks on a full pipe, and keep the end for error messages.
        self._log: collections.deque[str] = collections.deque(maxlen=50)
        listening = threading.Event()
        self.devtools_url = ""

        def read_log() -> None:
            for line in self._process.stderr:
                text = line.decode(errors="replace").rstrip()
                self._log.append(text)
                found = re.search(r"DevTools listening on (ws://\S+)", text)
                if found:
                    self.devtools_url = found.group(1)
                    listening.set()
            listening.set()  # Chromium exited

        threading.Thread(target=read_log, name="chromium stderr", daemon=True).start()
        if not listening.wait(60) or not self.devtools_url:
            self.close()
            raise RuntimeError("Chromium did not start:\n" + "\n".join(self._log))

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._profile.cleanup()

    @contextlib.asynccontextmanager
    async def page(self, url: str):
        """A new tab showing ``url`` (loaded), on a DevTools connection of its own."""
        async with devtools_connect(self.devtools_url, max_size=None, ping_interval=None) as connection:
            session = _DevTools(connection)
            reading = asyncio.ensure_future(session.read())
            try:
                target = (await session.call("Target.createTarget", {"url": "about:blank"}))["targetId"]
                try:
                    attached = await session.call("Target.attachToTarget", {"targetId": target, "flatten": True})
                    page = Page(session, attached["sessionId"])
                    await page.call("Page.enable")
                    loaded = session.event("Page.loadEventFired", page.session_id)
                    navigation = await page.call("Page.navigate", {"url": url})
                    if "errorText" in navigation:
                        raise AssertionError(f"Chromium could not load {url}: {navigation['errorText']}")
                    await asyncio.wait_for(loaded, TIMEOUT)
                    yield page
                finally:
                    await session.call("Target.closeTarget", {"targetId": target})
            finally:
                reading.cancel()


class Page:
    """A tab: ``evaluate`` runs JavaScript in it and returns the (awaited) result."""

    def __init__(self, devtools: _DevTools, session_id: str) -> None:
        self._devtools = devtools
        self.session_id = session_id

    async def call(self, method: str, params: dict | None = None, wait: float = TIMEOUT):
        return await self._devtools.call(method, params, self.session_id, wait)

    async def evaluate(self, expression: str, wait: float = TIMEOUT):
        """The value of ``expression`` (a promise is awaited), as JSON would carry it."""
        reply = await self.call(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, wait
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise AssertionError(f"JavaScript failed: {details.get('exception', {}).get('description', details)}")
        return reply["result"].get("value")


class _DevTools:
    """Commands with ids, their replies, and the events a test waits for."""

    def __init__(self, connection) -> None:
        self._connection = connection
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future] = {}
        self._events: dict[tuple[str, str], asyncio.Future] = {}

    async def call(self, method: str, params: dict | None = None, session_id: str | None = None, wait: float = TIMEOUT):
        command_id = next(self._ids)
        reply = self._replies[command_id] = asyncio.get_running_loop().create_future()
        command = {"id": command_id, "method": method, "params": params or {}}
        if session_id is not None:
            command["sessionId"] = session_id
        await self._connection.send(json.dumps(command))
        result = await asyncio.wait_for(reply, wait)
        if "error" in result:
            raise AssertionError(f"DevTools {method} failed: {result['error']}")
        return result.get("result", {})

    def event(self, method: str, session_id: str) -> asyncio.Future:
        """A future for the next ``method`` event of ``session_id``."""
        future = self._events[(method, session_id)] = asyncio.get_running_loop().create_future()
        return future

    async def read(self) -> None:
        async for text in self._connection:
            message = json.loads(text)
            if "id" in message:
                reply = self._replies.pop(message["id"], None)
                if reply is not None and not reply.done():
                    reply.set_result(message)
            else:
                waiter = self._events.pop((message.get("method"), message.get("sessionId")), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message.get("params", {}))
