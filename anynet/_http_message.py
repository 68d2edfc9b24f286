"""HTTP request, response and header objects: plain data, no I/O."""

from __future__ import annotations

import http
import re
from collections.abc import Iterator, MutableMapping
from typing import Any, Awaitable, Callable, Optional

# RFC 9110 section 5.6.2: a token, the syntax of a field name (and of a
# WebSocket subprotocol name, RFC 6455 section 4.1).
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value may hold any visible character, space and tab; CR, LF and NUL
# would let a value end the header block early (response splitting).
_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")

_STATUS_NAMES = {status.value: status.phrase for status in http.HTTPStatus}


class HTTPHeaders(MutableMapping[str, str]):
    """HTTP header fields: a mapping whose keys compare case-insensitively.

    Iteration yields each name as it was first written. A request header that
    the client repeats is stored once, its values joined with ``", "``, which
    RFC 9110 (section 5.3) defines as equivalent for every request field.

    Setting a field checks it: the name must be an RFC 9110 token and the
    value a ``str`` without CR, LF or NUL, so a response cannot be split.
    """

    # _packed: the fields as one string while _pack has put them away.
    __slots__ = ("_fields", "_packed")

    def __init__(self, fields: Optional[Any] = None) -> None:
        # lower-case name -> (name as written, value)
        self._fields: dict[str, tuple[str, str]] = {}
        if fields is not None:
            self.update(fields)

    def _pack(self) -> None:
        """Keep the fields as one string until they are next used.

        A WebSocket connection keeps its handshake request for its whole
        life, and a dict of a dozen fields, each name twice and a tuple,
        costs more than everything else an idle connection holds. The first
        use unpacks them again (see ``__getattr__``).
        """
        self._packed = "\n".join(f"{name}:{value}" for name, value in self._fields.values())
        del self._fields

    def __getattr__(self, attribute: str) -> Any:
        # Called only for an unset slot: ``_fields`` after _pack (``_packed``
        # otherwise, which is not there to be read).
        if attribute != "_fields":
            raise AttributeError(attribute)
        packed = self._packed
        del self._packed
        fields: dict[str, tuple[str, str]] = {}
        # A name is a token and a value holds no line break (the parser and
        # __setitem__ saw to both): the first ":" of a line ends its name.
        for line in packed.split("\n") if packed else ():
            name, _, value = line.partition(":")
            fields[name.lower()] = (name, value)
        self._fields = fields
        return fields

    def _append(self, name: str, value: str) -> None:
        # Wire input, already validated by the parser: no checks, and a repeated
        # field is combined instead of replaced.
        key = name.lower()
        previous = self._fields.get(key)
        if previous is None:
            self._fields[key] = (name, value)
        else:
            self._fields[key] = (previous[0], f"{previous[1]}, {value}")

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()][1]

    def __setitem__(self, name: str, value: str) -> None:
        if not isinstance(name, str) or not TOKEN.fullmatch(name):
            raise ValueError(f"invalid HTTP header name: {name!r}")
        if not isinstance(value, str):
            raise TypeError(f"HTTP header {name!r} must be a str, not {type(value).__name__}")
        if _FORBIDDEN_IN_VALUE.search(value):
            raise ValueError(f"HTTP header {name!r} contains CR, LF or NUL")
        key = name.lower()
        previous = self._fields.get(key)
        self._fields[key] = (previous[0] if previous else name, value)

    def __delitem__(self, name: str) -> None:
        del self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields.values())

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"HTTPHeaders({dict(self._fields.values())!r})"


class HTTPRequest:
    """An HTTP request as received by the server.

    ``path`` is the request target without the query string, exactly as sent
    (not percent-decoded); ``params`` holds the decoded query parameters, the
    last value winning when a name repeats (a name without ``=`` maps to ``""``).
    ``version`` is ``"HTTP/1.0"`` or ``"HTTP/1.1"``.
    """

    __slots__ = ("method", "path", "params", "version", "headers", "body")

    def __init__(
        self,
        method: str = "GET",
        path: str = "/",
        params: Optional[dict[str, str]] = None,
        version: str = "HTTP/1.1",
        headers: Optional[HTTPHeaders] = None,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.path = path
        self.params: dict[str, str] = {} if params is None else params
        self.version = version
        self.headers = HTTPHeaders() if headers is None else headers
        self.body = body

    def __repr__(self) -> str:
        return f"<HTTPRequest {self.method} {self.path} {self.version}>"


UpgradeFunction = Callable[[Any], Awaitable[None]]


class HTTPResponse:
    """An HTTP response, returned by a request handler.

    The server frames ``body`` with ``Content-Length`` (it sets that header
    itself and never sends ``Transfer-Encoding``) and adds ``Date`` unless the
    handler did. ``upgrade`` may be set to an async function
    ``upgrade(client)``: the server calls it once the response has been
    written, and it takes over the connection with ``client.switch_protocol``.
    The server honours it only for a request that asked to upgrade
    (``Connection: upgrade`` with an ``Upgrade`` header).
    """

    __slots__ = ("_status_code", "headers", "body", "upgrade")

    def __init__(self, status_code: int = 500) -> None:
        self.status_code = status_code
        self.headers = HTTPHeaders()
        self.body = b""
        self.upgrade: Optional[UpgradeFunction] = None

    @property
    def status_code(self) -> int:
        """The three-digit status code."""
        return self._status_code

    @status_code.setter
    def status_code(self, code: int) -> None:
        if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 999:
            raise ValueError(f"an HTTP status code is an int from 100 to 999, not {code!r}")
        self._status_code = code

    @property
    def status_name(self) -> str:
        """The reason phrase of ``status_code``, ``"Unknown"`` when not recognised."""
        return _STATUS_NAMES.get(self._status_code, "Unknown")

    def __repr__(self) -> str:
        return f"<HTTPResponse {self._status_code} {self.status_name}>"
