"""What the tests share: a bound on every wait, a server's URL, an echo handler,
the system programs some tests start."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

import anynet

# Close codes a peer may send (RFC 6455 7.4 and the IANA registry), and codes
# it may not: reserved, only ever reported locally, unassigned, out of range.
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]

# Seconds any single wait in a test may take before the test fails: generous
# for a loaded machine, short enough that a hang fails quickly and clearly.
TIMEOUT = 10


async def echo(client):
    """Send every message back with its own type until the connection ends."""
    async for message in client:
        if isinstance(message, bytes):
            await client.send(message)
        else:
            await client.send_text(message)


async def send_once_everyone_listens(members, message, timeout=TIMEOUT):
    """Send ``message`` from the first of ``members`` (connections to one room)
    once every member hears the room: probes go out until each member has
    heard one, so every subscription is in place, in whatever process serves
    it. Returns when every member has received a message that is not a probe."""
    heard = set()

    async def listen(member):
        while (await member.recv_text()) == "probe":
            heard.add(member)

    async def probe():
        while len(heard) < len(members):
            await members[0].send_text("probe")
            await asyncio.sleep(0.05)

    listeners = [asyncio.ensure_future(listen(member)) for member in members]
    try:
        await asyncio.wait_for(probe(), timeout)
        await members[0].send_text(message)
        await asyncio.wait_for(asyncio.gather(*listeners), TIMEOUT)
    finally:
        for listener in listeners:
            listener.cancel()


def url_of(server, path="/"):
    """The ws:// URL of an anynet server (anything with ``local_address()``)."""
    host, port = server.local_address()[:2]
    return f"ws://{host}:{port}{path}"


def python_path(*folders):
    """PYTHONPATH for a Python child process: the anynet these tests import
    (the installed one where it is installed, so that a child runs the same
    build, never a checkout's uncompiled copy), then ``folders``."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(anynet.__file__)))
    return os.pathsep.join([package_parent, *map(str, folders), os.environ.get("PYTHONPATH", "")])


def system_program(name):
    """The path of a program the suite starts (chromium, nginx), or a skip.

    Where ``ANYNET_REQUIRE_SYSTEM_PEERS=1`` (CI, which installs them) a
    missing program fails the test instead: those tests must never be skipped
    there unnoticed.
    """
    # Debian puts nginx in /usr/sbin, which a user's PATH may lack.
    path = shutil.which(name, path=os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin")))
    if path is None:
        reason = f"{name} is not installed (on Debian: apt-get install {DEBIAN_PACKAGES.get(name, name)})"
        if os.environ.get("ANYNET_REQUIRE_SYSTEM_PEERS", "") not in ("", "0"):
            pytest.fail(reason + "; ANYNET_REQUIRE_SYSTEM_PEERS is set", pytrace=False)
        pytest.skip(reason)
    return path


DEBIAN_PACKAGES = {"chromium": "chromium", "nginx": "nginx-light"}
