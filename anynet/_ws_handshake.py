"""The opening handshake of RFC 6455 section 4, for both roles.

Client side: ``build_request`` writes the upgrade request,
``ResponseHeadProtocol`` reads the server's response head with httptools
(and keeps whatever arrived after it: a server may send a frame at once),
and ``check_response`` decides whether the server accepted us.

Server side: ``check_request`` looks at an HTTP request and says which
response it deserves: 101 with the headers that complete the handshake, or
the error status that explains the refusal.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import re
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, cast

import httptools

from anynet._copied_reads import CopiedReads
from anynet._deflate_negotiation import (
    DeflateParameters,
    NegotiationError,
    PerMessageDeflate,
    check_server_answer,
    client_offer,
    server_answer,
)
from anynet._http_message import TOKEN
from anynet._url import WebSocketURL
from anynet._ws_errors import HandshakeError

# RFC 6455 section 1.3: the fixed GUID that proves the server speaks WebSocket.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

WEBSOCKET_VERSION = "13"

# The largest response head (status line and headers) a client accepts from a
# server, so that a hostile server cannot make it buffer without end.
MAX_RESPONSE_HEAD_SIZE = 64 * 1024

# A header name (a token) and a value without line breaks or other controls.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


# The first two bytes of a TLS alert or handshake record (content type 21 or
# 22, then the major version 3): what a TLS server may answer a plain request.
_TLS_RECORD_STARTS = (b"\x15\x03", b"\x16\x03")
class SchemeMismatchError(HandshakeError):
    """A plain request answered the way a TLS server answers it: the URL's
    scheme is wrong, and trying again cannot help."""


_SPEAKS_TLS = (
    "the server {} the upgrade request: it probably speaks TLS, so connect with wss:// instead of ws://"
)


def generate_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes in base64."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_value(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value that answers ``key``."""
    digest = hashlib.sha1(key.encode("ascii") + _ACCEPT_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def is_valid_key(key: str) -> bool:
    """Whether ``key`` is, as RFC 6455 requires, the base64 of exactly 16 bytes."""
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (UnicodeError, binascii.Error):
        return False


def header_tokens(value: str) -> List[str]:
    """The elements of a comma-separated header value, stripped, empty ones dropped."""
    return [token for token in (part.strip() for part in value.split(",")) if token]


def check_subprotocols(protocols: Optional[Sequence[str]]) -> List[str]:
    """Our user's subprotocol offer, validated: a list of tokens."""
    if protocols is None:
        return []
    if isinstance(protocols, (str, bytes)):
        raise TypeError("protocols must be a list of strings, not a single string")
    offer = list(protocols)
    for protocol in offer:
        check_subprotocol_name(protocol)
    if len(set(offer)) != len(offer):
        raise ValueError(f"subprotocols offered twice in {offer!r}")
    return offer


def check_subprotocol_name(protocol: object) -> None:
    """Raise ValueError unless ``protocol`` is a valid subprotocol name (a token)."""
    if not isinstance(protocol, str) or not TOKEN.fullmatch(protocol):
        raise ValueError(f"invalid subprotocol name: {protocol!r}")


def check_extra_headers(headers: Optional[Mapping[str, str]]) -> List[Tuple[str, str]]:
    """Our user's additional request headers, validated against header injection."""
    if headers is None:
        return []
    checked = []
    for name, value in headers.items():
        if not isinstance(name, str) or not TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name: {name!r}")
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise ValueError(f"invalid value for header {name!r}: {value!r}")
        if name.lower() in _HANDSHAKE_HEADERS:
            raise ValueError(f"the {name} header is set by the handshake itself")
        checked.append((name, value))
    return checked


_HANDSHAKE_HEADERS = frozenset(
    (
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    )
)


def build_request(
    url: WebSocketURL,
    key: str,
    protocols: Sequence[str],
    headers: Sequence[Tuple[str, str]],
    deflate_offers: Sequence[PerMessageDeflate] = (),
) -> bytes:
    """The client's upgrade request, ready to be written."""
    lines = [
        f"GET {url.resource} HTTP/1.1",
        f"Host: {url.host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {WEBSOCKET_VERSION}",
    ]
    if protocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
    if deflate_offers:
        lines.append(f"Sec-WebSocket-Extensions: {client_offer(deflate_offers)}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ResponseHead(NamedTuple):
    """A server's response head."""

    status: int
    headers: Dict[str, str]


class ResponseHeadProtocol(CopiedReads):
    """Writes the upgrade request, then reads the response head with httptools.

    ``head`` resolves to a ``ResponseHead`` or fails with ``HandshakeError``.
    Once the head is complete, ``leftover`` keeps what comes after it until
    the WebSocket protocol takes over, one loop turn later. Reading goes on
    meanwhile (pausing and resuming would cost two system calls per
    connection) until ``leftover`` holds more than a response head may;
    ``reading_paused`` then tells the new protocol to resume it. A transport
    may still deliver bytes after pausing (the TLS transport of Python before
    3.11 hands over the rest of what it has already decrypted): they are kept
    too.
    """

    def __init__(self, request: bytes, over_tls: bool) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(loop)
        self.head: asyncio.Future[ResponseHead] = loop.create_future()
        self._request = request
        self._over_tls = over_tls
        self._parser: Optional[httptools.HttpResponseParser] = httptools.HttpResponseParser(self)
        self._headers: Dict[str, str] = {}
        self._headers_complete = False
        self._received = 0
        self.leftover = bytearray()
        self.reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport.
        self._transport = transport = cast(asyncio.Transport, transport)
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self.head.done():
            self.leftover += data
            if len(self.leftover) > MAX_RESPONSE_HEAD_SIZE and not self.reading_paused:
                self._transport.pause_reading()
                self.reading_paused = True
            return
        if not self._received and not self._over_tls and data[:2] in _TLS_RECORD_STARTS:
            self._fail(SchemeMismatchError(_SPEAKS_TLS.format("answered with a TLS record")))
            return
        self._received += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._finish(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError:
            # A 101 without an Upgrade header stops the parser like this too;
            # the header check reports it properly.
            if not self._headers_complete:
                self._fail(HandshakeError("the server sent an invalid HTTP response"))
                return
        if self._headers_complete:
            self._finish(b"")
        elif self._received > MAX_RESPONSE_HEAD_SIZE:
            self._fail(
                HandshakeError(f"the server's response head exceeds {MAX_RESPONSE_HEAD_SIZE} bytes")
            )

    def eof_received(self) -> None:
        if not self._received and not self._over_tls:
            # What a TLS server does with a plain HTTP request (OpenSSL sends no alert).
            self._fail(SchemeMismatchError(_SPEAKS_TLS.format("closed the connection without answering")))
        else:
            self._fail(HandshakeError("the server closed the connection during the handshake"))

    def connection_lost(self, exc: Optional[Exception]) -> None:
        error = HandshakeError("the connection was lost during the handshake")
        error.__cause__ = exc
        self._fail(error)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip()
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self._headers_complete = True

    def _finish(self, leftover: bytes) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        self.leftover += leftover
        self.head.set_result(ResponseHead(status, self._headers))
        # Some loops (uvloop) keep the first protocol referenced for the life
        # of the connection: keep what it holds on to small.
        self._parser = None

    def _fail(self, error: HandshakeError) -> None:
        if not self.head.done():
            self.head.set_exception(error)


class ClientHandshake(NamedTuple):
    """What the server accepted: the subprotocol and permessage-deflate, or None."""

    subprotocol: Optional[str]
    deflate: Optional[DeflateParameters]


def check_response(
    head: ResponseHead,
    key: str,
    offered: Sequence[str],
    deflate_offers: Sequence[PerMessageDeflate] = (),
) -> ClientHandshake:
    """Check the server's answer to our request: what it chose must be what we offered."""
    status, headers = head.status, head.headers

    def refuse(message: str) -> HandshakeError:
        return HandshakeError(message, status, headers)

    if status != 101:
        raise refuse(f"the server answered with status {status} instead of 101")
    if "websocket" not in (token.lower() for token in header_tokens(headers.get("upgrade", ""))):
        raise refuse("the server's response lacks 'Upgrade: websocket'")
    if "upgrade" not in (token.lower() for token in header_tokens(headers.get("connection", ""))):
        raise refuse("the server's response lacks 'Connection: Upgrade'")
    if headers.get("sec-websocket-accept") != accept_value(key):
        raise refuse("the server's Sec-WebSocket-Accept does not match our key")
    try:
        deflate = check_server_answer(headers.get("sec-websocket-extensions"), list(deflate_offers))
    except NegotiationError as error:
        raise refuse(f"the server's Sec-WebSocket-Extensions is not acceptable: {error}") from None
    chosen = headers.get("sec-websocket-protocol")
    if chosen is not None and chosen not in offered:
        raise refuse(f"the server chose the subprotocol {chosen!r}, which was not offered")
    return ClientHandshake(chosen, deflate)


class ServerHandshake(NamedTuple):
    """The server's verdict on an upgrade request.

    ``status`` is 101 when the request is accepted; otherwise it is the error
    status to answer with and ``message`` says why, for the response body.
    ``headers`` are the response headers either way.
    """

    status: int
    headers: List[Tuple[str, str]]
    message: str
    subprotocol: Optional[str]
    deflate: Optional[DeflateParameters] = None


def check_request(
    method: str,
    version: str,
    headers: Mapping[str, str],
    protocol: Optional[str],
    deflate: Optional[PerMessageDeflate] = None,
) -> ServerHandshake:
    """Check a client's upgrade request (RFC 6455 section 4.2.1).

    ``headers`` must look names up case-insensitively. ``protocol`` is the
    subprotocol the server speaks: when set, a client that does not offer it
    is refused with 400. ``deflate`` is what the server accepts of
    permessage-deflate (None: it declines every offer).
    """

    def refuse(
        status: int, message: str, extra: Sequence[Tuple[str, str]] = ()
    ) -> ServerHandshake:
        return ServerHandshake(status, list(extra), message, None)

    if method != "GET":
        return refuse(405, "a WebSocket handshake uses GET", [("Allow", "GET")])
    if _version_tuple(version) < (1, 1):
        return refuse(400, "a WebSocket handshake needs HTTP/1.1 or later")
    upgrade = [token.lower() for token in header_tokens(headers.get("Upgrade", ""))]
    connection = [token.lower() for token in header_tokens(headers.get("Connection", ""))]
    if "websocket" not in upgrade or "upgrade" not in connection:
        return refuse(
            426,
            "this resource speaks WebSocket: send 'Upgrade: websocket' and 'Connection: Upgrade'",
            [("Upgrade", "websocket"), ("Connection", "Upgrade")],
        )
    if headers.get("Sec-WebSocket-Version", "").strip() != WEBSOCKET_VERSION:
        return refuse(
            426,
            f"unsupported WebSocket version: this server speaks version {WEBSOCKET_VERSION}",
            [("Sec-WebSocket-Version", WEBSOCKET_VERSION)],
        )
    key = headers.get("Sec-WebSocket-Key", "").strip()
    if not is_valid_key(key):
        return refuse(400, "missing or invalid Sec-WebSocket-Key")
    offered = header_tokens(headers.get("Sec-WebSocket-Protocol", ""))
    if protocol is not None and protocol not in offered:
        return refuse(400, f"this resource requires the subprotocol {protocol!r}")

    response_headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_value(key)),
    ]
    if protocol is not None:
        response_headers.append(("Sec-WebSocket-Protocol", protocol))
    agreed = None
    if deflate is not None:
        answer = server_answer(headers.get("Sec-WebSocket-Extensions"), deflate)
        if answer is not None:
            response_headers.append(("Sec-WebSocket-Extensions", answer[0]))
            agreed = answer[1]
    return ServerHandshake(101, response_headers, "", protocol, agreed)


def _version_tuple(version: str) -> Tuple[int, ...]:
    # "HTTP/1.1" as the HTTP layer reports it, or a bare "1.1".
    try:
        return tuple(int(part) for part in version.rpartition("/")[2].split("."))
    except ValueError:
        return (0,)
