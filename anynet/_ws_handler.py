"""The checks on a connection handler, made when ``serve`` or ``route`` is called.

A handler is called with one argument, the ``WebSocketClient``, and must
return an awaitable: an ``async def`` function, a bound ``async`` method, a
``functools.partial`` of one, an object with an ``async def __call__``, or
a plain function that returns a coroutine (a lambda, a decorator's wrapper).
Only what can certainly not work is refused, so that the mistake surfaces
at the call instead of as an obscure error on every connection:

* a handler that cannot take one positional argument;
* a generator or async generator function (neither can be awaited);
* a plain ``def`` whose every ``return`` returns ``None``, unless it calls
  ``set_message_callback``: that is a callback handler, which sets the
  connection's message callback and returns, and the connection lives on
  with no task.
"""

from __future__ import annotations

import dis
import functools
import inspect
import types
from typing import Any, Callable

_REMEDY = "a handler is an `async def handler(client)` taking the WebSocketClient"


def check_handler(handler: Callable[..., Any]) -> None:
    """Raise ``TypeError`` (naming the fix) if ``handler`` cannot be a handler."""
    if not callable(handler):
        raise TypeError(f"the handler must be an async function, not {type(handler).__name__}: {_REMEDY}")
    name = _describe(handler)
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        signature = None  # some built-in callables have none: nothing to check
    if signature is not None:
        try:
            signature.bind(None)
        except TypeError:
            raise TypeError(
                f"the handler {name}{signature} cannot be called with one argument, "
                f"the WebSocketClient: {_REMEDY}"
            ) from None
    function = _code_behind(handler)
    if function is None or inspect.iscoroutinefunction(function):
        return
    if inspect.isasyncgenfunction(function):
        raise TypeError(
            f"the handler {name} is an async generator (it contains `yield`), which cannot be "
            f"awaited: {_REMEDY}"
        )
    if inspect.isgeneratorfunction(function):
        if function.__code__.co_flags & inspect.CO_ITERABLE_COROUTINE:
            return  # a @types.coroutine generator can be awaited
        raise TypeError(
            f"the handler {name} is a generator function, which cannot be awaited: {_REMEDY}"
        )
    if _returns_only_none(function) and "set_message_callback" not in function.__code__.co_names:
        raise TypeError(
            f"the handler {name} is a plain function that returns None; "
            f"define it with `async def` (or have it call set_message_callback): {_REMEDY}"
        )


def _code_behind(handler: Callable[..., Any]) -> types.FunctionType | None:
    """The Python function that runs when ``handler`` is called, if there is one."""
    target: Any = handler
    while isinstance(target, functools.partial):
        target = target.func
    if isinstance(target, types.MethodType):
        target = target.__func__
    if isinstance(target, types.FunctionType):
        return target
    if isinstance(target, type):
        return None  # calling a class makes an instance, which may be awaitable
    call = getattr(type(target), "__call__", None)
    return call if isinstance(call, types.FunctionType) else None


def _returns_only_none(function: types.FunctionType) -> bool:
    """Whether every ``return`` of ``function`` returns the constant ``None``.

    Read from the bytecode, conservatively: a return whose value could come
    from elsewhere (a jump lands on it) counts as returning something.
    """
    previous = None
    for instruction in dis.get_instructions(function):
        if instruction.opname == "RETURN_CONST":  # Python 3.12 and 3.13
            if instruction.argval is not None:
                return False
        elif instruction.opname == "RETURN_VALUE":
            if (
                instruction.is_jump_target
                or previous is None
                or previous.opname != "LOAD_CONST"
                or previous.argval is not None
            ):
                return False
        previous = instruction
    return True


def _describe(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)
