"""``python -m anynet.websocket`` run as a user runs it: as a subprocess."""

import asyncio
import os
import re
import shutil
import sys

import pytest

import anynet
from anynet import websocket
from conftest import EXTENSIONS_DISABLED

# The subprocess must import the same anynet as this test process (the
# installed one in CI, the source tree in development), so it runs from there.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(anynet.__file__)))


async def start_cli(*args):
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "anynet.websocket",
        *args,
        cwd=PACKAGE_PARENT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process, stdin=b""):
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin), 30)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_bench_echoes_checked_messages_and_reports_speed():
    process = await start_cli("bench", "--clients", "3", "--messages", "200", "--size", "100")
    code, out, err = await finish(process)
    assert code == 0, err
    assert "600 messages echoed and checked" in out
    assert re.search(r"[\d,]+ messages/s", out)
    assert re.search(r"p50 [\d.]+ ms, p90 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms", out)


async def test_serve_echoes_text_and_binary_until_terminated():
    process = await start_cli("serve", "--port", "0", "--path", "/echo", "--ping-interval", "0")
    try:
        banner = await asyncio.wait_for(process.stdout.readline(), 30)
        url = re.search(r"ws://\S+", banner.decode()).group(0)
        assert url.endswith("/echo")
        async with websocket.connect(url) as client:
            await client.send_text("hello")
            await client.send(b"\x00\x01")
            assert await client.recv_message() == "hello"
            assert await client.recv_message() == b"\x00\x01"
    finally:
        process.terminate()
    code, _, err = await finish(process)
    assert code == 0, err


async def test_connect_sends_typed_lines_and_prints_what_arrives():
    received = []

    async def shout(client):
        async for message in client:
            received.append(message)
            await client.send_text(message.upper())
            await client.send(b"\xff" * 40)

    async with websocket.serve(shout, "127.0.0.1", 0) as server:
        port = server.local_address()[1]
        process = await start_cli("connect", f"ws://127.0.0.1:{port}/")
        # The lines go in one by one so that each reply can arrive before stdin ends.
        for line in (b"hello\n", b"world\n"):
            process.stdin.write(line)
            await process.stdin.drain()
            await asyncio.wait_for(process.stdout.readline(), 30)
            await asyncio.wait_for(process.stdout.readline(), 30)
        code, _, err = await finish(process)
    assert code == 0, err
    assert received == ["hello", "world"]
    assert "connection closed: 1000" in err


async def test_connect_prints_replies_in_order():
    async def greet(client):
        await client.send_text("welcome")
        await client.send(bytes(range(4)))
        async for message in client:
            await client.send_text(f"got {message}")

    async with websocket.serve(greet, "127.0.0.1", 0) as server:
        port = server.local_address()[1]
        process = await start_cli("connect", f"ws://127.0.0.1:{port}/")
        lines = [await asyncio.wait_for(process.stdout.readline(), 30) for _ in range(2)]
        process.stdin.write(b"ping\n")
        await process.stdin.drain()
        lines.append(await asyncio.wait_for(process.stdout.readline(), 30))
        code, _, err = await finish(process)
    assert code == 0, err
    assert [line.decode().rstrip("\n") for line in lines] == ["welcome", "<4 bytes: 00010203>", "got ping"]


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["bench", "--size", "4"], "at least 8 bytes"),
        (["bench", "--clients", "0"], "must be a positive number"),
        (["serve", "--certificate", "cert.pem"], "--certificate and --key go together"),
        (["serve", "--max-queue", "0"], "max_queue"),
        (["connect", "ftp://127.0.0.1/"], "scheme"),
    ],
)
async def test_bad_arguments_are_refused_with_a_message(args, complaint):
    process = await start_cli(*args)
    code, _, err = await finish(process)
    assert code != 0
    assert complaint in err
    assert "Traceback" not in err


async def test_connect_reports_a_refused_connection_in_one_line():
    listener = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()  # the port is now closed: connecting is refused
    code, _, err = await finish(await start_cli("connect", f"ws://127.0.0.1:{port}/"))
    assert code == 1
    assert err.startswith("python -m anynet.websocket: connect: ")
    assert "Traceback" not in err


async def test_connect_reports_an_abnormal_close_with_its_code():
    async def refuse_big_messages(client):
        await client.recv_text()

    async with websocket.serve(refuse_big_messages, "127.0.0.1", 0, max_message_size=10) as server:
        port = server.local_address()[1]
        process = await start_cli("connect", f"ws://127.0.0.1:{port}/")
        code, _, err = await finish(process, b"a message longer than ten bytes\n")
    assert code == 0, err
    assert "connection closed: 1009" in err
    assert "Traceback" not in err


async def test_a_checkout_shadowing_the_compiled_core_is_pointed_out(tmp_path):
    # A source tree without the extension in the current directory, the
    # package with the compiled core (when built) further along sys.path.
    shutil.copytree(
        os.path.join(PACKAGE_PARENT, "anynet"), tmp_path / "anynet", ignore=shutil.ignore_patterns("*.so", "*.pyd")
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "anynet.websocket",
        "bench",
        "--clients",
        "1",
        "--messages",
        "10",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": PACKAGE_PARENT},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    code, out, err = await finish(process)
    assert code == 0, err
    assert "python core" in out
    if EXTENSIONS_DISABLED:
        assert "note:" not in err  # the pure-Python core was asked for
    else:
        assert "running the pure-Python core, because the anynet in" in err
        assert f"the installed one in {PACKAGE_PARENT}, which has the compiled core" in err
