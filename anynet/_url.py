"""The URL rules of ``anynet.websocket.connect``.

A WebSocket URL here is ``[ws://|wss://]host[:port][/path][?query]``:

* the scheme is optional; without one, TLS is used exactly when the caller
  gives a TLS context;
* ``host`` is a name, an IPv4 address or a bracketed IPv6 literal (``[::1]``);
* the port defaults to 80 without TLS and 443 with it;
* the path defaults to ``/`` and the query string is kept as written.

Anything else (another scheme, credentials, a fragment, a bad port, no host)
is our user's mistake and raises ``ValueError`` at once.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import NamedTuple

DEFAULT_PORTS = {False: 80, True: 443}

# Characters that may stay as they are in a request target: RFC 3986's
# unreserved and reserved sets, plus "%" so that an already percent-encoded
# path is not encoded twice. Everything else (spaces, controls, non-ASCII) is
# percent-encoded, so nothing from the URL can break the request line.
_TARGET_SAFE_CHARACTERS = "-._~:/?#[]@!$&'()*+,;=%"


EXPECTED_FORM = "ws://host[:port][/path] or wss://host[:port][/path]"

# Scheme names a user may write instead of the WebSocket ones, with the one meant.
_HTTP_SCHEMES = {"http": "ws", "https": "wss"}

# A scheme followed by something other than "://" (``ws:/host``, ``wss:host``,
# ``ws:\\host``): without this check the scheme would be read as a host name.
# ``host:port`` (digits after the colon) is a URL without a scheme, not this.
_MALFORMED_SCHEME = re.compile(r"(?i)(wss?|https?):(?!//)(?!\d+(?:[/?]|$))")


class WebSocketURL(NamedTuple):
    """Where to connect and what to ask for, as decided from a URL."""

    secure: bool
    host: str
    port: int
    resource: str

    @property
    def host_header(self) -> str:
        """The value of the ``Host`` header: the port only when not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == DEFAULT_PORTS[self.secure]:
            return host
        return f"{host}:{self.port}"


def parse_url(url: str, has_context: bool) -> WebSocketURL:
    """Parse ``url`` for a client that was (or was not) given a TLS context."""
    if not isinstance(url, str):
        raise TypeError(f"the URL must be a str, not {type(url).__name__}")

    scheme, separator, rest = url.partition("://")
    if separator:
        scheme = scheme.lower()
        if scheme == "ws":
            if has_context:
                raise ValueError(
                    f"a TLS context was given for the unencrypted URL {url!r}; use wss://"
                )
            secure = False
        elif scheme == "wss":
            secure = True
        elif scheme in _HTTP_SCHEMES:
            raise ValueError(
                f"{url!r} is an HTTP URL: a WebSocket URL starts with "
                f"{_HTTP_SCHEMES[scheme]}:// ({EXPECTED_FORM})"
            )
        else:
            raise ValueError(f"unsupported URL scheme {scheme!r} in {url!r}: expected {EXPECTED_FORM}")
    else:
        malformed = _MALFORMED_SCHEME.match(url)
        if malformed:
            raise ValueError(
                f"malformed URL {url!r}: the scheme {malformed.group(1)!r} must be followed by "
                f"'://'; expected {EXPECTED_FORM}"
            )
        rest = url
        secure = has_context

    # urlsplit needs the "//" to read the authority without a scheme.
    parts = urllib.parse.urlsplit("//" + rest)
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"credentials in the URL are not supported: {url!r}")
    if parts.fragment or rest.endswith("#"):
        raise ValueError(f"a WebSocket URL has no fragment: {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"the URL {url!r} has no host: expected {EXPECTED_FORM}")
    host = _ascii_host(host, url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in {url!r}") from None
    if port is None:
        port = DEFAULT_PORTS[secure]
    elif port == 0:
        raise ValueError(f"port 0 cannot be connected to: {url!r}")

    resource = urllib.parse.quote(parts.path or "/", safe=_TARGET_SAFE_CHARACTERS)
    if parts.query:
        resource += "?" + urllib.parse.quote(parts.query, safe=_TARGET_SAFE_CHARACTERS)
    return WebSocketURL(secure, host, port, resource)


def _ascii_host(host: str, url: str) -> str:
    """``host`` as it goes on the wire: international names in IDNA form."""
    if host.isascii():
        if any(character <= " " or character == "\x7f" for character in host):
            raise ValueError(f"invalid host in {url!r}")
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"invalid host name in {url!r}") from None
