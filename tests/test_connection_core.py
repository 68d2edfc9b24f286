"""The compiled and the pure-Python connection core are twins.

Every WebSocket test runs on the core that ``anynet._backend`` chose, and the
suite runs again with ``ANYNET_NO_EXTENSIONS=1``; these tests check, on both
cores in one run, what the twins must share whichever is chosen.
"""

import asyncio
import importlib
import inspect
import sys

import pytest

from anynet import _connection_core
from anynet._ws_options import connection_options

ASYNC_METHODS = ("send", "send_text", "recv", "recv_text", "recv_message", "__anext__")


# Helpers that the compiled core keeps as C functions, invisible from Python.
C_ONLY = {"_receiver", "_next_message", "_refuse_hopeless_wait", "_dispatch", "_deliver"}


def own_names(cls):
    """Attributes and methods the class defines, without Python's and Cython's machinery."""
    names = {name for name in vars(cls) if not name.startswith("__")} - C_ONLY
    return names | {name for name in ("__aiter__", "__anext__") if name in vars(cls)}


# The pure-Python core is the reference the compiled one is compared with.
REFERENCE = _connection_core.ConnectionCore


def test_each_core_has_the_attributes_and_methods_of_the_reference(core):
    assert own_names(core.ConnectionCore) == own_names(REFERENCE)


@pytest.mark.parametrize("name", ASYNC_METHODS)
def test_each_core_documents_the_public_methods_as_the_reference_does(core, name):
    # Python 3.13 strips the indentation of docstrings that it compiles; Cython does not.
    docstring = inspect.cleandoc(getattr(core.ConnectionCore, name).__doc__ or "")
    assert docstring and docstring == inspect.cleandoc(getattr(REFERENCE, name).__doc__)


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
