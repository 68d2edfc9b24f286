"""The connection core, one source in two builds: compiled by Cython
(``anynet._connection_core_c``) and interpreted (``anynet._connection_core``).

Every WebSocket test runs on the build that ``anynet._backend`` chose, and the
suite runs again with ``ANYNET_NO_EXTENSIONS=1``; these tests run on both
builds in one run, for what compiling could change: what kind of callable the
public methods are, and limits beyond a C integer.
"""

import asyncio
import importlib
import inspect
import sys

import pytest

from anynet import _connection_core
from anynet._ws_options import connection_options

ASYNC_METHODS = ("send", "send_text", "recv", "recv_text", "recv_message", "__anext__")


def options(**overrides):
    values = dict(
        max_message_size=1 << 20,
        max_queue=32,
        write_limit=1 << 20,
        disconnect_timeout=None,
        ping_interval=None,
        ping_timeout=None,
    )
    values.update(overrides)
    return connection_options(**values)


def new_connection(core, **overrides):
    # Each core works with the framing of its own backend.
    framing = importlib.import_module("anynet._framing" if core is _connection_core else "anynet._framing_c")
    reader, writer = framing.FrameReader(False), framing.FrameWriter(False)
    return core.ConnectionCore(reader, writer, options(**overrides))


def is_coroutine_function(function):
    if sys.version_info >= (3, 10):
        return inspect.iscoroutinefunction(function)
    # The inspect module of Python 3.9 recognises Python functions only.
    return asyncio.iscoroutinefunction(function)


@pytest.mark.parametrize("name", ["send", "send_text", "recv", "recv_text", "recv_message"])
def test_the_public_methods_are_coroutine_functions(core, name):
    assert is_coroutine_function(getattr(core.ConnectionCore, name))


@pytest.mark.parametrize("name", ASYNC_METHODS)
async def test_the_public_methods_return_coroutines(core, name):
    # asyncio.create_task(client.recv()) and the like need real coroutines.
    method = getattr(new_connection(core), name)
    arguments = {"send": (b"bytes",), "send_text": ("text",)}.get(name, ())
    coroutine = method(*arguments)
    assert asyncio.iscoroutine(coroutine)
    coroutine.close()


async def test_limits_beyond_any_memory_are_accepted(core):
    connection = new_connection(core, max_queue=2**80, write_limit=2**80)
    assert connection._pause_level >= 2**62
    assert connection._write_limit >= 2**62
    assert connection._state is _connection_core.OPEN
