"""The game server guide's first example works as written: origins, hook, data."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import types
from pathlib import Path

import pytest

from anynet import websocket
from support import TIMEOUT, url_of

GUIDE = (Path(__file__).resolve().parent.parent / "docs" / "game-servers.md").read_text()


def example_definitions(monkeypatch):
    """The example as a module, everything but its ``asyncio.run(main())``."""
    example = re.findall(r"```python\n(.*?)```", GUIDE, re.DOTALL)[0]
    assert example.rstrip().endswith("asyncio.run(main())")
    module = types.ModuleType("game_server_example")
    # A dataclass looks its module up in sys.modules.
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(example.rstrip()[: -len("asyncio.run(main())")], module.__dict__)
    return module.__dict__


def callback_variant(game):
    """The guide's ``player`` that takes inputs in a message callback, in the example."""
    variant = re.findall(r"```python\n(.*?)```", GUIDE, re.DOTALL)[1]
    assert "set_message_callback" in variant
    exec(variant, game)
    return game


async def play(game):
    # The example's options, but on a free port of the loopback interface.
    async with websocket.serve(
        game["player"],
        "127.0.0.1",
        0,
        path="/play",
        origins=["https://game.example"],
        process_request=game["admit"],
    ) as server:
        ticking = asyncio.create_task(game["tick"]())
        try:
            page = {"Origin": "https://game.example"}
            for url, headers, status in (
                (url_of(server, "/play?room=red&token=token-of-alice"), {}, 403),
                (url_of(server, "/play?room=red&token=forged"), page, 401),
            ):
                try:
                    async with websocket.connect(url, headers=headers):
                        raise AssertionError("the example let an unwanted client in")
                except websocket.HandshakeError as refused:
                    assert refused.status == status
            url = url_of(server, "/play?room=red&token=token-of-alice")
            async with websocket.connect(url, headers=page) as alice:
                await alice.send_text(json.dumps({"dx": 1.5, "dy": -2}))
                while True:
                    state = json.loads(await asyncio.wait_for(alice.recv_text(), TIMEOUT))
                    if state == {"alice": [1.5, -2.0]}:
                        break
                await alice.send_text("not json")
                with pytest.raises(websocket.ConnectionClosedError) as closed:
                    while True:
                        await asyncio.wait_for(alice.recv_text(), TIMEOUT)
                assert closed.value.code == 1008
        finally:
            ticking.cancel()
        assert not game["rooms"]["red"]


async def test_the_example_admits_by_origin_and_token_and_keeps_players_in_data(monkeypatch):
    await play(example_definitions(monkeypatch))


async def test_the_callback_variant_of_the_handler_plays_the_same(monkeypatch):
    await play(callback_variant(example_definitions(monkeypatch)))
