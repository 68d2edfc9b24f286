"""Which upgrade requests a WebSocket route lets in: origins and the request hook.

Both checks run before the WebSocket handshake is even validated, so a
refused request never reaches the handler:

1. The ``Origin`` header against the allowed origins. A browser sends the
   origin of the page whose script opens the connection, and the page
   cannot forge it: checking it is the defence against cross-site WebSocket
   hijacking, where any page a player visits opens a connection that carries
   the player's cookies. Clients other than browsers usually send no Origin.
2. The application's ``process_request(request)``, sync or async, which may
   answer instead of the upgrade (authentication, rate limits, maintenance).
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import Awaitable, Callable, FrozenSet, Iterable, Optional, Set, Union

from anynet._http_message import HTTPRequest, HTTPResponse

logger = logging.getLogger("anynet.websocket")

RequestHook = Callable[
    [HTTPRequest], Union[Optional[HTTPResponse], Awaitable[Optional[HTTPResponse]]]
]

# scheme "://" host [":" port], the form of RFC 6454 section 6.2 (a host is a
# name, an IPv4 address, or an IPv6 address in brackets).
_ORIGIN = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s/?#@:\[\]]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
# The origin of a page that has none of its own (a sandboxed frame, a file).
_OPAQUE_ORIGIN = "null"


def serialize_origin(value: str) -> Optional[str]:
    """``value`` as RFC 6454 serializes an origin, or None if it is not one.

    Scheme and host are lower-cased, and a port that is the scheme's default
    is left out, so ``HTTPS://Example.com:443`` and ``https://example.com``
    are the same origin.
    """
    if value == _OPAQUE_ORIGIN:
        return value
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    host = match["host"].lower()
    port = match["port"]
    if port is None or int(port) == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    if int(port) > 65535:
        return None
    return f"{scheme}://{host}:{int(port)}"


def allowed_origins(
    origins: Optional[Iterable[Optional[str]]],
) -> Optional[FrozenSet[Optional[str]]]:
    """Check and serialize the ``origins`` option; None allows every request."""
    if origins is None:
        return None
    if isinstance(origins, (str, bytes)):
        raise TypeError(f"origins must be a sequence of origins, not one: write [{origins!r}]")
    try:
        entries = list(origins)
    except TypeError:
        raise TypeError(
            f"origins must be a sequence of str or None, not {type(origins).__name__}"
        ) from None
    allowed: Set[Optional[str]] = set()
    for entry in entries:
        if entry is None:
            allowed.add(None)
            continue
        if not isinstance(entry, str):
            raise TypeError(f"an origin is a str (or None), not {type(entry).__name__}")
        origin = serialize_origin(entry)
        if origin is None:
            raise ValueError(
                f"not an origin: {entry!r} (write scheme://host or scheme://host:port, "
                "without a path or a trailing slash)"
            )
        allowed.add(origin)
    return frozenset(allowed)


def check_request_hook(hook: Optional[RequestHook]) -> None:
    if hook is not None and not callable(hook):
        raise TypeError(
            f"process_request must be a function of the request, not {type(hook).__name__}"
        )


class Admission:
    """The checks of one route (see the module); ``refusal`` runs them."""

    __slots__ = ("_origins", "_hook")

    def __init__(
        self, origins: Optional[FrozenSet[Optional[str]]], hook: Optional[RequestHook]
    ) -> None:
        self._origins = origins
        self._hook = hook

    async def refusal(self, request: HTTPRequest) -> Optional[HTTPResponse]:
        """The response that refuses ``request``, or None to go on with the upgrade."""
        if self._origins is not None and not self._origin_allowed(request):
            logger.info(
                "refused a WebSocket request for %s from origin %s",
                request.path,
                request.headers.get("origin", "(none)"),
            )
            response = HTTPResponse(403)
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
            response.body = b"this origin may not open a WebSocket here\n"
            return response
        if self._hook is not None:
            return await self._ask_hook(self._hook, request)
        return None

    def _origin_allowed(self, request: HTTPRequest) -> bool:
        assert self._origins is not None
        header = request.headers.get("origin")
        if header is None:
            return None in self._origins
        # A repeated header arrives joined with ", " and is no origin at all.
        origin = serialize_origin(header.strip())
        return origin is not None and origin in self._origins

    @staticmethod
    async def _ask_hook(hook: RequestHook, request: HTTPRequest) -> Optional[HTTPResponse]:
        try:
            answer = hook(request)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception:
            logger.exception("process_request failed on %s %s", request.method, request.path)
            return HTTPResponse(500)
        if answer is None:
            return None
        if isinstance(answer, HTTPResponse) and answer.upgrade is None and answer.status_code >= 200:
            return answer
        logger.error(
            "process_request returned %r for %s %s; it returns None to accept, "
            "or an HTTPResponse of status 200 or more (without upgrade) to refuse",
            answer,
            request.method,
            request.path,
        )
        return HTTPResponse(500)
