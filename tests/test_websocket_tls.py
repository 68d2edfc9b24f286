"""WebSocket over TLS with a generated CA: wss URLs, mutual TLS, interoperability."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

from anynet import websocket
from support import TIMEOUT, echo


def tls_server(pki, handler=echo, require_client_certificate=False):
    context = pki.server_context(require_client_certificate=require_client_certificate)
    return websocket.serve(handler, "127.0.0.1", 0, context, ping_interval=None)


def port_of(server):
    return server.local_address()[1]


async def test_wss_echo(pki):
    async with tls_server(pki) as server:
        url = f"wss://127.0.0.1:{port_of(server)}/"
        async with websocket.connect(url, pki.client_context()) as client:
            for message in (b"secret", "also secret", b"s" * (1 << 20)):
                if isinstance(message, bytes):
                    await client.send(message)
                else:
                    await client.send_text(message)
                assert await asyncio.wait_for(client.recv_message(), TIMEOUT) == message


async def test_url_without_scheme_uses_tls_when_given_a_context(pki):
    async with tls_server(pki) as server:
        url = f"localhost:{port_of(server)}/"
        async with websocket.connect(url, pki.client_context()) as client:
            await client.send(b"over tls")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"over tls"


async def test_wss_without_context_verifies_with_the_default_context(pki):
    async with tls_server(pki) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            async with websocket.connect(f"wss://127.0.0.1:{port_of(server)}/"):
                pass


async def test_plain_client_against_a_tls_server_fails_cleanly(pki):
    async with tls_server(pki) as server:
        with pytest.raises((websocket.HandshakeError, OSError)):
            async with websocket.connect(
                f"ws://127.0.0.1:{port_of(server)}/", handshake_timeout=TIMEOUT
            ):
                pass


async def test_mutual_tls_certificates_on_both_sides(pki):
    async def tell_client_name(client):
        certificate = client.remote_certificate()
        assert client.remote_ceritifcate() == certificate
        await client.send_text(certificate.subject["CN"])

    async with tls_server(pki, tell_client_name, require_client_certificate=True) as server:
        url = f"wss://127.0.0.1:{port_of(server)}/"
        async with websocket.connect(url, pki.client_context(with_certificate=True)) as client:
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "anynet test client"
            assert client.remote_certificate().subject["CN"] == "localhost"
            assert client.remote_ceritifcate() == pki.server_cert


async def test_server_without_client_authority_sees_no_client_certificate(pki):
    async def tell(client):
        await client.send_text(repr(client.remote_certificate()))

    async with tls_server(pki, tell) as server:
        url = f"wss://127.0.0.1:{port_of(server)}/"
        async with websocket.connect(url, pki.client_context()) as client:
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "None"


async def test_websockets_client_against_anynet_wss_server(pki):
    async with tls_server(pki) as server:
        client_ssl = pki.client_context().get(server=False)
        url = f"wss://localhost:{port_of(server)}/"
        async with ws_connect(url, ssl=client_ssl) as connection:
            await connection.send("hello over tls")
            assert await asyncio.wait_for(connection.recv(), TIMEOUT) == "hello over tls"


async def test_anynet_client_against_websockets_wss_server(pki):
    async def websockets_echo(connection):
        async for message in connection:
            await connection.send(message)

    server_ssl = pki.server_context().get(server=True)
    async with ws_serve(websockets_echo, "127.0.0.1", 0, ssl=server_ssl) as server:
        port = server.sockets[0].getsockname()[1]
        async with websocket.connect(f"wss://127.0.0.1:{port}/", pki.client_context()) as client:
            await client.send(b"\x00tls\xff")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"\x00tls\xff"
            assert client.remote_certificate() == pki.server_cert
