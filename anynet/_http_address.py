"""Where a server listens and whom a connection joins: socket addresses.

Also the local address of the default gateway's interface (what ``host=""``
means).
"""

from __future__ import annotations

import errno
import socket
from typing import Any, NamedTuple, Tuple

# A documentation address (RFC 5737 TEST-NET-2): never assigned to a real host,
# so no local route covers it and the kernel picks the default route. Connecting
# a UDP socket only selects a route and a source address; no packet is sent.
_PROBE_DESTINATION = ("198.51.100.1", 9)


def default_gateway_address() -> str:
    """Return the IPv4 address of the interface that holds the default route.

    Raises OSError (ENETUNREACH) with an explanation when the machine has no
    IPv4 default route.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(_PROBE_DESTINATION)
        except OSError as error:
            raise OSError(
                errno.ENETUNREACH,
                "host='' means the address of the default gateway's interface, "
                "but this machine has no IPv4 default route "
                f"({error.strerror or error}); pass an explicit host, "
                "e.g. '127.0.0.1' or '0.0.0.0'",
            ) from error
        address: str = probe.getsockname()[0]
    return address


class TCPAddress(NamedTuple):
    """Where a TCP server listens; an empty host is the default gateway's interface."""

    host: str
    port: int
    reuse_port: bool


class UnixAddress(NamedTuple):
    """Where a Unix socket server listens: the socket's path."""

    path: str


def host_port(address: Any) -> Tuple[str, int]:
    """``(host, port)`` of a socket address as the transport reports it.

    IPv6 addresses come with flow info and scope id, which are left out. A
    Unix socket's address is its path, reported as ``(path, 0)``; the path of
    a client's socket is usually empty.
    """
    if isinstance(address, tuple) and len(address) >= 2:
        return (address[0], address[1])
    if isinstance(address, str):
        return (address, 0)
    return ("", 0)
