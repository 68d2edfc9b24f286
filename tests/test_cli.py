"""``python -m anynet.websocket`` run as a user runs it: as a subprocess."""

import asyncio
import os
import re
import shutil
import subprocess
import sys

import pytest

import anynet
from anynet import tls, websocket
from anynet._cli import main
from conftest import EXTENSIONS_DISABLED
from redis_server import redis_server  # noqa: F401 (a fixture)
from support import python_path, send_once_everyone_listens, url_of

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


async def test_serve_workers_share_rooms_through_redis(redis_server):
    process = await start_cli(
        "serve", "--port", "0", "--workers", "2", "--redis", redis_server.url, "--ping-interval", "0"
    )
    contexts = []
    try:
        banner = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert "2 workers" in banner and redis_server.url in banner
        url = re.search(r"ws://\S+", banner).group(0)
        # The banner comes once every worker listens.
        contexts += [websocket.connect(url + "?room=lobby") for _ in range(8)]
        members = [await asyncio.wait_for(context.__aenter__(), 30) for context in contexts]
        echo_context = websocket.connect(url)
        contexts.append(echo_context)
        echo_client = await echo_context.__aenter__()
        await echo_client.send_text("just me")
        assert await asyncio.wait_for(echo_client.recv_text(), 10) == "just me"

        await send_once_everyone_listens(members, "to everyone", timeout=30)
    finally:
        for context in contexts:
            await context.__aexit__(None, None, None)
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
    assert code == 1, err
    assert "connection closed abnormally: 1009" in err
    assert "Traceback" not in err


def record_messages(received, requests=None, answer=True):
    """A handler that keeps every message (and the upgrade request) and echoes it if asked."""

    async def handler(client):
        if requests is not None:
            requests.append(client.request)
        async for message in client:
            received.append(message)
            if answer and isinstance(message, bytes):
                await client.send(message)
            elif answer:
                await client.send_text(message)

    return handler


async def test_connect_sends_one_message_prints_the_reply_and_exits():
    received, requests = [], []
    async with websocket.serve(record_messages(received, requests), "127.0.0.1", 0) as server:
        process = await start_cli(
            "connect", url_of(server), "--send", "hello there", "-H", "Authorization: Bearer t0ken", "-H", "X-Room:lobby"
        )
        code, out, err = await finish(process)
    assert code == 0, err
    assert out == "hello there\n"
    assert received == ["hello there"]
    assert requests[0].headers["Authorization"] == "Bearer t0ken"
    assert requests[0].headers["X-Room"] == "lobby"
    assert "connection closed: 1000" in err


async def test_connect_sends_binary_from_hex_and_prints_binary_as_hex():
    received = []
    async with websocket.serve(record_messages(received), "127.0.0.1", 0) as server:
        process = await start_cli(
            "connect", url_of(server), "--binary", "--send", "de ad be ef", "--send", "00" * 40, "--replies", "2"
        )
        code, out, err = await finish(process)
    assert code == 0, err
    assert received == [b"\xde\xad\xbe\xef", bytes(40)]
    assert out.splitlines() == ["deadbeef", "00" * 40]


async def test_connect_sends_typed_hex_lines_as_binary():
    received = []
    async with websocket.serve(record_messages(received), "127.0.0.1", 0) as server:
        process = await start_cli("connect", url_of(server), "--binary")
        process.stdin.write(b"0102\n")
        await process.stdin.drain()
        reply = await asyncio.wait_for(process.stdout.readline(), 30)
        code, _, err = await finish(process)
    assert code == 0, err
    assert received == [b"\x01\x02"]
    assert reply == b"0102\n"


async def test_connect_sends_a_file_and_standard_input_as_binary(tmp_path):
    payload = os.urandom(3000)
    (tmp_path / "payload.bin").write_bytes(payload)
    received = []
    async with websocket.serve(record_messages(received, answer=False), "127.0.0.1", 0) as server:
        process = await start_cli(
            "connect", url_of(server), "--send-file", str(tmp_path / "payload.bin"), "--send-file", "-",
            "--replies", "0",
        )
        code, out, err = await finish(process, b"from stdin until EOF")
    assert code == 0, err
    assert received == [payload, b"from stdin until EOF"]
    assert out == ""


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--binary", "--send", "not hex"], "is not hex"),
        (["-H", "no colon"], "a header is 'Name: value'"),
        (["--send-file", "/nonexistent/file"], "No such file"),
    ],
)
async def test_connect_refuses_bad_messages_and_headers_before_connecting(args, complaint):
    code, _, err = await finish(await start_cli("connect", "ws://127.0.0.1:9/", *args))
    assert code != 0
    assert complaint in err
    assert "Traceback" not in err


async def test_serve_logs_each_connection_and_its_close_code():
    process = await start_cli("serve", "--port", "0", "--max-message-size", "10", "--ping-interval", "0")
    try:
        url = re.search(r"ws://\S+", (await asyncio.wait_for(process.stdout.readline(), 30)).decode()).group(0)
        async with websocket.connect(url) as client:
            await client.send_text("small")
            await asyncio.wait_for(client.recv_text(), 30)
            address = "%s:%d" % client.local_address()[:2]
        async with websocket.connect(url) as client:
            await client.send(bytes(11))
            with pytest.raises(websocket.ConnectionClosedError):
                await asyncio.wait_for(client.recv(), 30)
        # Each close is logged before the next connection is answered: read up to the last one.
        lines = []
        while "closed: 1009" not in "".join(lines):
            lines.append((await asyncio.wait_for(process.stderr.readline(), 30)).decode())
    finally:
        process.terminate()
    code, _, err = await finish(process)
    assert code == 0, err
    log = "".join(lines)
    assert f"INFO {address} connected to /" in log
    assert f"INFO {address} closed: 1000" in log
    assert "closed: 1009 message too big" in log


async def test_serve_quiet_logs_no_connections():
    process = await start_cli("serve", "--port", "0", "--quiet")
    try:
        url = re.search(r"ws://\S+", (await asyncio.wait_for(process.stdout.readline(), 30)).decode()).group(0)
        async with websocket.connect(url) as client:
            await client.send_text("hello")
            await asyncio.wait_for(client.recv_text(), 30)
    finally:
        process.terminate()
    code, _, err = await finish(process)
    assert code == 0, err
    assert "connected" not in err and "closed" not in err


async def test_bench_measures_an_external_wss_server(pki, tmp_path):
    (tmp_path / "ca.pem").write_bytes(pki.ca.encode(tls.TYPE_PEM))
    received = []
    async with websocket.serve(record_messages(received), "127.0.0.1", 0, pki.server_context()) as server:
        url = f"wss://localhost:{server.local_address()[1]}/"
        process = await start_cli("bench", "--url", url, "--ca", str(tmp_path / "ca.pem"), "--clients", "2", "--messages", "50")
        code, out, err = await finish(process)
    assert code == 0, err
    assert f"server {url} (an external server;" in out
    assert "100 messages echoed and checked" in out
    assert len(received) == 100


async def test_bench_accepts_messages_as_large_as_its_size_unless_limited():
    process = await start_cli("bench", "--clients", "1", "--messages", "3", "--size", "2000000")
    code, out, err = await finish(process)
    assert code == 0, err
    assert "3 messages echoed and checked" in out
    process = await start_cli("bench", "--clients", "1", "--messages", "3", "--size", "2000", "--max-message-size", "1000")
    code, out, err = await finish(process)
    assert code == 1
    assert "1009" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["serve", "connect", "bench"])
def test_every_command_documents_uvloop(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--uvloop" in capsys.readouterr().out


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
        env={**os.environ, "PYTHONPATH": python_path()},
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


def test_python_m_anynet_websocket_defines_nothing_twice():
    # The copy of anynet.websocket run as __main__ hands over to the command
    # line (which imports anynet.websocket) before defining anything itself.
    script = (
        "import runpy, sys\n"
        "sys.argv = ['anynet.websocket', '--version']\n"
        "try:\n"
        "    runpy.run_module('anynet.websocket', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as done:\n"
        "    traceback = done.__traceback__\n"
        "    while traceback.tb_frame.f_code.co_filename != sys.modules['anynet.websocket'].__file__:\n"
        "        traceback = traceback.tb_next\n"
        "    names = ('connect', 'serve', 'WebSocketClient')\n"
        "    print([name for name in names if name in traceback.tb_frame.f_globals])\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert output.splitlines()[-1] == "[]"
