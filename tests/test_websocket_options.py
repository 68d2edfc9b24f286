"""The keyword-only options of the public functions: one list, never drifting apart."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import pathlib

import pytest

from anynet import websocket
from anynet._ws_options import connection_options
from support import TIMEOUT, echo, url_of

# Every public function that opens connections.
OPENERS = [
    websocket.connect,
    websocket.serve,
    websocket.route,
    websocket.unix_connect,
    websocket.unix_serve,
]
OPTIONS = list(inspect.signature(connection_options).parameters.values())
DOCS = pathlib.Path(__file__).parent.parent / "docs" / "websocket.md"


def keyword_only(function):
    return {
        parameter.name: parameter
        for parameter in inspect.signature(function).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


@pytest.mark.parametrize("function", OPENERS, ids=lambda function: function.__name__)
def test_every_opener_takes_every_connection_option_as_the_reference_does(function):
    parameters = keyword_only(function)
    for option in OPTIONS:
        assert option.name in parameters, f"{function.__name__} lacks {option.name}"
        parameter = parameters[option.name]
        assert (parameter.default, parameter.annotation) == (option.default, option.annotation)


def test_an_option_shared_by_two_functions_has_one_default_and_one_type():
    for first, second in itertools.combinations(OPENERS, 2):
        one, other = keyword_only(first), keyword_only(second)
        for name in one.keys() & other.keys():
            assert (one[name].default, one[name].annotation) == (
                other[name].default,
                other[name].annotation,
            ), f"{name} differs between {first.__name__} and {second.__name__}"


def test_every_connection_option_is_documented_with_its_default():
    table = DOCS.read_text()
    for option in OPTIONS:
        assert f"``{option.name}``" in websocket.__doc__
        assert f"| `{option.name}` |" in table


async def test_handshake_timeout_none_means_the_default_on_both_sides():
    async with websocket.serve(
        echo, "127.0.0.1", 0, handshake_timeout=None, ping_interval=None
    ) as server:
        async with websocket.connect(url_of(server), handshake_timeout=None) as client:
            await client.send(b"bounded")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"bounded"
